//! The mail store (being written).
