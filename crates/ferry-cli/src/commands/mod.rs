pub mod add;
pub mod calckey;
pub mod filter;
pub mod fsck;
pub mod info;
pub mod init;
pub mod lock;
pub mod whereis;
