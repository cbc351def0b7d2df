# Everyday commands. `just --list` shows them.

# Format the code.
fmt:
    cargo fmt --all

# Lint with clippy, warnings as errors.
lint:
    cargo clippy --workspace --all-targets -- -D warnings

# The test suite (the README's test command).
test:
    cargo test --workspace

# Run the server on its embedded default.
serve:
    cargo run --release -- serve

# Build every fuzz target and run each for a short while.
fuzz-smoke:
    bash fuzz/smoke.sh

# Criterion benches.
bench:
    cargo bench -p headscale
