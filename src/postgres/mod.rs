//! What the connectors know of PostgreSQL and share: reaching a server
//! ([`connection`]), the replication protocol and its slots
//! ([`replication`]), the client tools and their versions ([`tools`]), and
//! the catalogue each snapshot's `/manifest.json` records ([`manifest`]).
//! Nothing here knows of Plakar's wire nor of a kind of backup.

pub mod connection;
pub mod manifest;
pub mod replication;
pub mod tools;
