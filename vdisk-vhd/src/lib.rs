//! VHD 1.0 backend.
#![forbid(unsafe_code)]
