//! Built-in tiny upstream (being written).
