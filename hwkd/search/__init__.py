"""Hardware-aware search: the space, controllers, trials, the study store, Pareto fronts and picks."""
