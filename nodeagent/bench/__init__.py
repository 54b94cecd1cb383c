"""``saga bench``: replay agent workloads on a simulated cluster and compare policy sets."""
