//! Damage handling.
