"""Personalized restaurant reservation (personalized bAbI dialog task 5) from little data, plus the related
bAbI dialog task 5: the launcher, its data and program, and the diagnostics built on them."""
