//! Parsers and writers for the files that configuration stages edit.

pub mod unit;
