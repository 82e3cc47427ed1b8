"""What the commands do, as library functions: evaluate, predict, export, benchmark."""
