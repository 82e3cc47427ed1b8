"""Training: the epoch loop, the step, the schedule, stop signals and resume."""
