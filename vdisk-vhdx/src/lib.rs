//! VHDX backend (MS-VHDX). Filled by the VHDX issue.
#![forbid(unsafe_code)]
