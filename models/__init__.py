"""SimPy components of meshsim: workloads, services, proxies, filters and mesh architectures."""
