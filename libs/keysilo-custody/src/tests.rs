use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn vectors() -> serde_json::Value {
    serde_json::from_str(include_str!("../tests/data/vectors.json")).unwrap()
}

fn ring(current: u32, versions: &[u32]) -> MasterKeyRing {
    let keys = versions
        .iter()
        .map(|&v| MasterKey::from_bytes(v, [v as u8; 32]))
        .collect();
    MasterKeyRing::new(current, keys).unwrap()
}

fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).unwrap()
}

#[test]
fn sealing_matches_the_published_aes_256_gcm_vectors() {
    for case in vectors()["aes_256_gcm"].as_array().unwrap() {
        let key: [u8; 32] = hex(case["key"].as_str().unwrap()).try_into().unwrap();
        let nonce: [u8; 12] = hex(case["nonce"].as_str().unwrap()).try_into().unwrap();
        let sealed = seal(
            &MasterKey::from_bytes(1, key),
            &nonce,
            &hex(case["aad"].as_str().unwrap()),
            &hex(case["plaintext"].as_str().unwrap()),
        )
        .unwrap();

        let mut expected = hex(case["ciphertext"].as_str().unwrap());
        expected.extend(hex(case["tag"].as_str().unwrap()));
        assert_eq!(sealed, expected, "{}", case["source"]);
    }
}

#[test]
fn thumbprints_match_rfc_7638() {
    let case = &vectors()["rfc7638"];
    let jwk = PublicJwk {
        n: case["n"].as_str().unwrap().to_owned(),
        e: case["e"].as_str().unwrap().to_owned(),
    };

    assert_eq!(jwk.thumbprint(), case["thumbprint"].as_str().unwrap());
}

#[test]
fn a_wrapped_key_opens_for_its_own_tenant_and_kid() {
    let ring = ring(1, &[1]);
    let key = generate_rsa_key().unwrap();

    let wrapped = ring.wrap(&tenant("acme"), &key.kid, &key.private).unwrap();

    assert_eq!(wrapped.master_key_version, 1);
    assert_eq!(
        ring.unwrap(&tenant("acme"), &key.kid, &wrapped).unwrap(),
        key.private
    );
}

#[test]
fn a_wrapped_key_moved_to_another_tenant_fails_to_unwrap() {
    let ring = ring(1, &[1]);
    let key = generate_rsa_key().unwrap();
    let wrapped = ring.wrap(&tenant("acme"), &key.kid, &key.private).unwrap();

    let err = ring
        .unwrap(&tenant("other"), &key.kid, &wrapped)
        .unwrap_err();

    assert!(matches!(err, CustodyError::UnwrapFailed));
}

#[test]
fn a_wrapped_key_under_another_kid_fails_to_unwrap() {
    let ring = ring(1, &[1]);
    let key = generate_rsa_key().unwrap();
    let wrapped = ring.wrap(&tenant("acme"), &key.kid, &key.private).unwrap();
    let other_kid = Kid::parse("some-other-kid").unwrap();

    assert!(matches!(
        ring.unwrap(&tenant("acme"), &other_kid, &wrapped),
        Err(CustodyError::UnwrapFailed)
    ));
}

#[test]
fn a_tampered_ciphertext_or_nonce_fails_to_unwrap() {
    let ring = ring(1, &[1]);
    let key = generate_rsa_key().unwrap();
    let wrapped = ring.wrap(&tenant("acme"), &key.kid, &key.private).unwrap();

    let mut flipped = wrapped.clone();
    flipped.ciphertext[10] ^= 1;
    let mut renonced = wrapped.clone();
    renonced.nonce[0] ^= 1;

    for bad in [flipped, renonced] {
        assert!(matches!(
            ring.unwrap(&tenant("acme"), &key.kid, &bad),
            Err(CustodyError::UnwrapFailed)
        ));
    }
}

#[test]
fn every_wrap_uses_a_fresh_nonce() {
    let ring = ring(1, &[1]);
    let key = generate_rsa_key().unwrap();

    let a = ring.wrap(&tenant("acme"), &key.kid, &key.private).unwrap();
    let b = ring.wrap(&tenant("acme"), &key.kid, &key.private).unwrap();

    assert_ne!(a.nonce, b.nonce);
    assert_ne!(a.ciphertext, b.ciphertext);
}

#[test]
fn rewrap_moves_a_key_to_the_current_version_and_the_old_version_can_go() {
    let key = generate_rsa_key().unwrap();
    let old = ring(1, &[1])
        .wrap(&tenant("acme"), &key.kid, &key.private)
        .unwrap();
    let both = ring(2, &[1, 2]);

    let new = both.rewrap(&tenant("acme"), &key.kid, &old).unwrap();

    assert_eq!(new.master_key_version, 2);
    let only_new = ring(2, &[2]);
    assert_eq!(
        only_new.unwrap(&tenant("acme"), &key.kid, &new).unwrap(),
        key.private
    );
    assert!(matches!(
        only_new.unwrap(&tenant("acme"), &key.kid, &old),
        Err(CustodyError::UnknownMasterKeyVersion { version: 1 })
    ));
}

#[test]
fn a_ring_needs_its_current_version_and_unique_versions() {
    assert!(MasterKeyRing::new(2, vec![MasterKey::from_bytes(1, [0; 32])]).is_err());
    assert!(
        MasterKeyRing::new(
            1,
            vec![
                MasterKey::from_bytes(1, [0; 32]),
                MasterKey::from_bytes(1, [1; 32])
            ]
        )
        .is_err()
    );
}

#[test]
fn master_keys_parse_from_32_bytes_of_base64_only() {
    assert!(MasterKey::from_base64(1, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").is_ok());
    assert!(MasterKey::from_base64(1, "dG9vIHNob3J0").is_err());
    assert!(MasterKey::from_base64(1, "not base64 at all!").is_err());
}

#[test]
fn generated_keys_are_rsa_2048_with_their_thumbprint_as_kid() {
    let key = generate_rsa_key().unwrap();

    assert_eq!(key.kid.as_str(), key.public.thumbprint());
    assert_eq!(key.public.e, "AQAB");
    // 256 bytes of modulus in unpadded base64url.
    assert_eq!(key.public.n.len(), 342);
}

#[test]
fn secrets_never_show_in_debug_output() {
    let key = generate_rsa_key().unwrap();
    let master = MasterKey::from_bytes(1, [0xAB; 32]);

    let dump = format!("{key:?} {master:?} {:?}", ring(1, &[1]));

    assert!(dump.contains("[REDACTED]"));
    assert!(!dump.contains("171"), "{dump}"); // 0xAB as a decimal byte
    assert!(!dump.contains("ABAB"), "{dump}");
}
