"""Speed and memory benchmarks of meshsim (not tests); run them with ``make bench``."""
