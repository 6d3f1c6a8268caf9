//! Local experts: GGUF models run in-process with candle.
