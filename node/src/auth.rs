//! Bearer tokens between services: workers to the coordinator, the sequencer to settlement.

use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The environment variable that holds the token when `--token` is not given.
pub const TOKEN_ENV: &str = "ROLLUP_TOKEN";

/// Resolves the token from the flag or the environment.
pub fn resolve(flag: Option<String>) -> Option<String> {
    flag.or_else(|| std::env::var(TOKEN_ENV).ok()).filter(|t| !t.is_empty())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// UNAUTHENTICATED unless the metadata carries `authorization: Bearer <token>`.
pub fn check(metadata: &MetadataMap, token: &str) -> Result<(), Status> {
    let got = metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
    if constant_time_eq(got.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(Status::unauthenticated("invalid bearer token"))
    }
}

/// Server side: rejects calls without the token.
#[derive(Clone)]
pub struct RequireToken(pub String);

impl Interceptor for RequireToken {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        check(req.metadata(), &self.0)?;
        Ok(req)
    }
}

/// Client side: adds the token to every call.
#[derive(Clone)]
pub struct AddToken(pub Option<String>);

impl Interceptor for AddToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            let v = format!("Bearer {t}").parse().map_err(|_| Status::invalid_argument("token is not ASCII"))?;
            req.metadata_mut().insert("authorization", v);
        }
        Ok(req)
    }
}
