"""How the suite measures and records: device timing, ceilings, metrics, machine info,
results files, and the compare / gate / csv command line (python -m harness)."""
