//! The dataplane engine.
