//! Parsers and writers for the files that configuration stages edit.

pub mod accounts;
pub mod dropin;
pub mod keyvalue;
pub mod passwd;
pub mod unit;
