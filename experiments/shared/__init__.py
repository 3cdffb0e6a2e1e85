"""What the experiment launchers share: the base config, the method table's trainers, the base program, the
run store (resume), summary tables and the command line."""
