pub mod vrrp;
