"""The ideal noisy-label experiment: can meta-learned weights ignore the related task's wrong labels?"""
