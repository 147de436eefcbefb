//! Finding the token in a request (`extract`) and reading its compact-JWS form without
//! trusting it (`jws`).

pub mod extract;
pub mod jws;
