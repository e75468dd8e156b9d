//! Throughput of the phone path's parts, and the cost of one 20 ms frame through the whole inbound
//! (JSON -> base64 -> mu-law -> 16 kHz) and outbound (16 kHz -> mu-law -> base64 -> JSON) path.
//! `make bench` runs it; criterion prints medians.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use voca::audio::g711;
use voca::audio::resample::{Downsampler, Upsampler};
use voca::twilio::media::{encode_frame, Inbound, MediaOut, Outbound, FRAME_B64, MAX_MEDIA_BYTES};

fn speech_like(n: usize) -> Vec<i16> {
    (0..n).map(|i| ((i as f32 * 0.07).sin() * 9000.0 + (i as f32 * 0.31).sin() * 3000.0) as i16).collect()
}

fn codec(c: &mut Criterion) {
    let pcm = speech_like(160);
    let mut mulaw = [0u8; 160];
    g711::encode_into(&pcm, &mut mulaw);
    let mut out = [0i16; 160];
    let mut group = c.benchmark_group("g711");
    group.throughput(Throughput::Elements(160));
    group.bench_function("encode 20 ms", |b| b.iter(|| g711::encode_into(black_box(&pcm), &mut mulaw)));
    group.bench_function("decode 20 ms", |b| b.iter(|| g711::decode_into(black_box(&mulaw), &mut out)));
    group.finish();
}

fn resampler(c: &mut Criterion) {
    let pcm8 = speech_like(160);
    let pcm16 = speech_like(320);
    let mut up_out = [0i16; 320];
    let mut down_out = [0i16; 160];
    let mut up = Upsampler::default();
    let mut down = Downsampler::default();
    let mut group = c.benchmark_group("resample");
    group.throughput(Throughput::Elements(160));
    group.bench_function("8k->16k 20 ms", |b| b.iter(|| up.process(black_box(&pcm8), &mut up_out)));
    group.bench_function("16k->8k 20 ms", |b| b.iter(|| down.process(black_box(&pcm16), &mut down_out)));
    group.finish();
}

fn whole_frame(c: &mut Criterion) {
    let pcm = speech_like(160);
    let mut mulaw = [0u8; 160];
    g711::encode_into(&pcm, &mut mulaw);
    let mut b64 = [0u8; FRAME_B64];
    let sid = "MZ0123456789abcdef0123456789abcdef";
    let payload = encode_frame(&mulaw, &mut b64).to_owned();
    let message = format!(
        r#"{{"event":"media","sequenceNumber":"42","streamSid":"{sid}","media":{{"track":"inbound","chunk":"41","timestamp":"820","payload":"{payload}"}}}}"#
    );
    let reply = speech_like(320);

    let mut up = Upsampler::default();
    let mut down = Downsampler::default();
    let mut buf = Box::new([0u8; MAX_MEDIA_BYTES]);
    let mut pcm8 = [0i16; 160];
    let mut pcm16 = [0i16; 320];
    let mut out_mulaw = [0u8; 160];
    let mut json = Vec::with_capacity(512);

    let mut group = c.benchmark_group("frame");
    group.bench_function("inbound: JSON to 16 kHz", |b| {
        b.iter(|| {
            if let Ok(Inbound::Media { media }) = Inbound::parse(black_box(&message)) {
                let n = media.decode_into(&mut buf).unwrap_or(0);
                g711::decode_into(&buf[..n], &mut pcm8);
                up.process(&pcm8, &mut pcm16);
            }
            black_box(&pcm16);
        })
    });
    group.bench_function("outbound: 16 kHz to JSON", |b| {
        b.iter(|| {
            let n = down.process(black_box(&reply), &mut pcm8);
            g711::encode_into(&pcm8[..n], &mut out_mulaw);
            let payload = encode_frame(&out_mulaw[..n], &mut b64);
            Outbound::Media { stream_sid: sid, media: MediaOut { payload } }.write_json(&mut json);
            black_box(&json);
        })
    });
    group.finish();
}

criterion_group!(benches, codec, resampler, whole_frame);
criterion_main!(benches);
