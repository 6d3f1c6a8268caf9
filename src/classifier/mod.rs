//! The embedded candle classifier: router artifacts, training, evaluation and the
//! batching classification service.

pub mod cli;
