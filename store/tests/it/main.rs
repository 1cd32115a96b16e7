//! Store conformance tests.
