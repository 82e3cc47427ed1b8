"""Where and how tensors run: device, precision, memory format, seeding, the allocator."""
