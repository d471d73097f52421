//! polytape's benchmark programs live in `examples/`; see BENCHMARKS.md.
