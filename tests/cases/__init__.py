"""The test cases; tests/run_tests.py imports and runs them."""
