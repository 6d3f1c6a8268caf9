//! Tests with the real backbone and the shipped routers/default.
