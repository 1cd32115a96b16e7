//! Admin commands of the binary that run once and exit (as opposed to the
//! roles, which serve until stopped).

pub mod alerts;
pub mod keys;
pub mod users;
