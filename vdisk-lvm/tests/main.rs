//! Integration tests of vdisk-lvm through its public interface: one binary, one module per
//! concern.

mod main {
    mod text;
}
