//! Worker actor: binds one device and runs jobs (pretrain, eval, backtest, trade). Built in the actor-runtime issue.
