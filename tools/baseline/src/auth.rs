//! HS256 tokens with jsonwebtoken's default validation: the signature, and
//! `exp`, which must be present (60 s of leeway). No claim is used.

use jsonwebtoken::errors::Error;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::IgnoredAny;

pub struct Auth {
    key: DecodingKey,
    validation: Validation,
}

impl Auth {
    pub fn new(secret: &str) -> Result<Self, Error> {
        Ok(Self {
            key: DecodingKey::from_secret(secret.as_bytes())?,
            validation: Validation::new(Algorithm::HS256),
        })
    }

    pub fn verify(&self, token: &str) -> Result<(), Error> {
        jsonwebtoken::decode::<IgnoredAny>(token, &self.key, &self.validation).map(drop)
    }
}
