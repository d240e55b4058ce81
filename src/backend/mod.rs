pub mod ftp;
