pub mod check_config;
pub mod client;
mod license_args;
pub mod node;
pub mod pki;
pub mod serve;
pub mod show;
pub mod vrrp;
pub mod witness;
