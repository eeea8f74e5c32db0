//! Who wrote what a build ran, and who vouches for what it made.
//!
//! Keys are ed25519, in the formats `ssh-keygen -t ed25519` writes
//! ([`keys`]). Stages are signed inside the component or beside the
//! executable ([`stage`]); a policy's `signers` names the keys it takes
//! for each stage. Provenance is wrapped in a DSSE envelope ([`dsse`]).

pub mod dsse;
pub mod keys;
pub mod stage;

pub use keys::{SigningKey, VerifyingKey};
