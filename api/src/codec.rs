//! The codec of Coffer's gRPC servers: prost's encoding, except that a
//! request whose bytes do not decode is answered `INVALID_ARGUMENT` (the
//! caller sent them) instead of prost's `INTERNAL` (which says the server
//! failed). Clients keep prost's codec: a response that does not decode is
//! the server's fault.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstDecoder, ProstEncoder};

/// The servers' codec (see the module docs).
#[derive(Debug, Clone)]
pub struct RequestCodec<T, U> {
    types: PhantomData<(T, U)>,
}

impl<T, U> Default for RequestCodec<T, U> {
    fn default() -> Self {
        Self { types: PhantomData }
    }
}

impl<T, U> Codec for RequestCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder { prost: ProstDecoder::default() }
    }
}

/// Decodes a request with prost; bytes that do not decode are the caller's
/// error.
#[derive(Debug, Clone)]
pub struct RequestDecoder<U> {
    prost: ProstDecoder<U>,
}

impl<U: prost::Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.prost.decode(buf).map_err(|status| {
            Status::invalid_argument(format!("the request does not decode as a protobuf message: {}", status.message()))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.prost.buffer_settings()
    }
}
