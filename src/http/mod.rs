pub mod htpasswd;
