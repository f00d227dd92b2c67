pub mod add;
pub mod calckey;
pub mod fsck;
pub mod info;
pub mod init;
pub mod whereis;
