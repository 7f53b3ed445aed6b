//! Pipeline sources (filled in later).
