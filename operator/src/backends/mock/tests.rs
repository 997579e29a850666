//! Unit tests of the mock: interpreter, logs, provider behaviour.
