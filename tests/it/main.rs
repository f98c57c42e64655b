//! Integration tests: the real simulator and the real gateway on 127.0.0.1:0.

mod accounts;
mod accounts_use;
mod auth;
mod callers;
mod cli;
mod clients;
mod common;
mod deploy;
mod faults;
mod gateway;
mod grpcurl;
mod hostile;
mod instances;
mod operations;
mod redis;
mod report;
mod selection;
mod shared;
mod shared_trouble;
mod shell;
mod simulator;
