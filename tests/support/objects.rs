//! Builders for the operator's objects, so a test states only what it is about.
