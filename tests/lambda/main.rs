//! Every function binary as a Lambda, in one test binary: through a stand-in Runtime API on
//! the embedded store (`runtime`), and on DynamoDB behind a recording proxy that checks each
//! function's IAM policy against the calls it makes (`iam`).

mod iam;
mod runtime;
mod support;
