"""What the commands do, as library functions: evaluate, predict, export, benchmark, compare,
train over seeds (repeat) and tune."""
