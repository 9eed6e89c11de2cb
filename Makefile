# The README's two commands. Both install what is missing first (tools/ensure-env).
.PHONY: bench test
bench:  ## device-timed perf cases, results under .benchmarks/<gpu>/ (NAME=... names the run)
	@tools/bench $(ARGS)
test:   ## correctness, harness and e2e tests (CPU: Triton interpreter; GPU: native)
	@tools/test $(ARGS)
