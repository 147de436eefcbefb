"""The secret key of a keytool-made PKCS #12 keystore entry (keytool -genseckey), read
with pyasn1 and `cryptography` (PBES2/PBKDF2/AES-CBC, as keytool writes it), never
through tokengate. Used by jwe_for_keys.py and dpop_mint.py (both beside this file).
"""

import hashlib

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pyasn1.codec.der import decoder

SECRET_BAG = "1.2.840.113549.1.12.10.1.5"
FRIENDLY_NAME = "1.2.840.113549.1.9.20"


def der(b):
    return decoder.decode(b)[0]


def secret_key(path, password, alias):
    pfx = der(open(path, "rb").read())
    for content in der(bytes(pfx[1][1])):
        if str(content[0]) != "1.2.840.113549.1.7.1":
            continue
        for bag in der(bytes(content[1])):
            if str(bag[0]) != SECRET_BAG:
                continue
            names = [str(a[1][0]) for a in bag[2] if str(a[0]) == FRIENDLY_NAME] if len(bag) > 2 else []
            if alias not in names:
                continue
            epki = der(bytes(bag[1][1]))
            kdf, enc = epki[0][1][0], epki[0][1][1]
            salt, iterations, length = bytes(kdf[1][0]), int(kdf[1][1]), int(kdf[1][2])
            key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations, length)
            d = Cipher(algorithms.AES(key), modes.CBC(bytes(enc[1]))).decryptor()
            padded = d.update(bytes(epki[1])) + d.finalize()
            unpadder = padding.PKCS7(128).unpadder()
            info = der(unpadder.update(padded) + unpadder.finalize())
            return bytes(info[2])
    raise KeyError(f"no secret key {alias!r} in {path}")
