//! Oracle tests for the stage library (see issue 4).

mod common;
