"""The answering-machine detection (AMD) benchmark set, generated (never committed as audio).

Each case is what the far end sends from the moment it answers an outbound call, as the detector sees it:
8 kHz mono PCM16 after G.711. The question is who answered: a person ("human"), a voicemail greeting
("machine", often ending in a beep after which a message can be left) or nobody ("unknown": line noise only).

Categories (full set 240 cases; quick set 16, the first few of each category, identical to the full set's
cases of the same name, and generated afresh in a few seconds without the cache, for the test suite):
  human_short   72  a short answer ("Hello?", "Yes, speaking.", "Hi, this is Mark.") 300-1500 ms after
                    answer, then the person waits; half say something again ("Hello?", "Anyone there?")
                    1.5-3 s after the first utterance ends. 6-10 s.
  human_long    48  the hard case: a business answer by a person, 2-4.5 s of speech, one or two sentences
                    ("Thank you for calling Acme Plumbing, this is Sarah, how can I help you?"), then silence
                    and, in about 40 %, "Hello?" 2-3 s later. 8-10 s.
  machine_beep  84  a voicemail greeting 300-1500 ms after answer (personal, business, carrier, a personal
                    greeting followed by a carrier prompt in another voice, or a terse 1-2 s one such as
                    "Leave a message."; about 10 % terse), 2.5-15 s of speech with natural pauses; 200-800 ms
                    later a beep, then 2-4 s of silence (the machine is recording).
  machine       24  the same greetings without a beep: 3-5 s of silence after the greeting, or (30 %) 6-9 s.
  silence       12  line noise only (white, pink or brown, -70 to -50 dBm0), sometimes a click. 6-10 s.
About one case in nine is in German, Spanish or French; the rest are English in 14 espeak-ng voices.

Fairness: humans and machines are drawn from the same distributions of everything except what is said and
how long it goes on: when speech starts after the answer (300-1500 ms), voice (espeak-ng voice and variant,
pitch 20-85, 140-190 wpm, word gap), how a multi-sentence turn is rendered (one espeak-ng call with its own
punctuation pauses, or one call per sentence joined by 200-600 ms gaps), room reverberation (20 %), talker
level, channel, noise, clicks and codec. Business openers are shared by human_long and machine greetings,
and some people say "you've reached", so wording alone does not decide. (Until stop 27 greetings started
0-800 ms after the answer: the edges of the two uniform draws alone told 157 of the 240 cases apart before
2.5 s, bench/amd_bound.py found; a voicemail system may wait a second before its greeting and a person may
speak at once, so those edges were the generator's, not the calls'.)

Signal chain per case (all numpy after espeak-ng, deterministic; each case's randomness is seeded by the
crc32 of its name, and the choice of voice and words by the crc32 of "category#index"):
  espeak-ng WAV -> media.audio.decode_wav (the project's resampler to 8 kHz) -> trimmed of espeak's padding
  -> optional room reverberation (RT60 0.15-0.45 s, direct-to-reverberant 4-12 dB) -> the case's telephone
  channel, a 201-tap linear-phase band-pass with edges drawn from 200-350 Hz and 3200-3500 Hz -> scaled to
  the talker's active speech level, a random -26 to -12 dBm0 (a quiet to a loud talker; a second "Hello?"
  is 0-4 dB louder, a carrier prompt within 4 dB) -> beep added -> background noise over the whole case
  (white, pink or brown, through the same channel) at an SNR of 15-40 dB below the talker level (12 % of
  cases 40-55 dB) -> clicks (20 % of cases) -> rounded to int16 -> mu-law or A-law and back (half each).
Levels are dBm0 RMS, with 0 dBm0 the RMS of a sine of peak 32767 * 10**(-3.14/20) (G.711's digital
milliwatt). The active speech level is the mean power of the 10 ms frames within 15.9 dB of it (P.56's
margin, iterated to a fixed point, without P.56's envelope and hangover).

Beeps (machine_beep): one sine (half), two or three simultaneous sines (a quarter), or a train of two short
beeps (a quarter, the second sometimes at another frequency); frequencies from 425, 440, 480, 800, 850,
1000, 1400 and 1800 Hz (60 %) or uniform in 400-2000 Hz; 100-1500 ms (train: 100-400 ms each, 80-250 ms
apart; lengths log-uniform); -20 to -6 dBm0 total power; raised-cosine attack and decay of 3-15 ms each
(counted in the beep).

Ground truth (ms from answer, i.e. from the first sample):
  speech_start_ms  onset of the first utterance: the first sample at which the trailing 10 ms window of the
                   clean, channel-filtered, dry (no reverberation) speech exceeds the talker level - 35 dB;
  greeting_end_ms  the end of the greeting's speech (humans: the first utterance, not the later "Hello?";
                   machines: the whole greeting including a carrier prompt): the first sample after the last
                   leading 10 ms window above that threshold. Both are exact for the dry signal; reverberant
                   cases carry 50-200 ms of decaying tail after greeting_end_ms;
  beep_start_ms, beep_end_ms  the first and one-past-last sample of the beep (of the train), ramps included.
None where it does not apply (silence has none; humans and machine have no beep). `text` is what the greeting
says (the sentences of the whole greeting; a person's first utterance), for analyses such as bench/amd_bound.py;
no detector sees it.

The cache (bench/out/amd/, full set only) is keyed by this file, the espeak-ng version and the compiled
resampler and G.711 kernels; sox is not used (the post-processing is numpy), so its version is not part of it.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import re
import shutil
import subprocess
import sys
import time
import unicodedata
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cext import g711 as g711_kernel
from cext import resample
from media import audio, g711

RATE = 8000
DBM0_SINE_PEAK = 32767 * 10 ** (-3.14 / 20)  # peak of a 0 dBm0 sine
DBM0_RMS = DBM0_SINE_PEAK / np.sqrt(2)  # RMS of a 0 dBm0 signal
CATEGORIES = ("human_short", "human_long", "machine", "machine_beep", "silence")
TRUTH = {
    "human_short": "human",
    "human_long": "human",
    "machine": "machine",
    "machine_beep": "machine",
    "silence": "unknown",
}
FULL_COUNTS = {"human_short": 72, "human_long": 48, "machine": 24, "machine_beep": 84, "silence": 12}
QUICK_COUNTS = {"human_short": 4, "human_long": 3, "machine": 3, "machine_beep": 4, "silence": 2}
CACHE = Path(__file__).resolve().parent / "out" / "amd"

TALKER_DBM0 = (-26.0, -12.0)  # active speech level of a case's talker
SNR_DB = (15.0, 40.0)  # noise below the talker level; QUIET_SNR_DB for QUIET_SHARE of the cases
QUIET_SNR_DB, QUIET_SHARE = (40.0, 55.0), 0.12
SILENCE_NOISE_DBM0 = (-70.0, -50.0)
ONSET_MS = (300.0, 1500.0)  # when the first utterance starts after the answer, people and machines alike
SPAN_THRESHOLD_DB = 35.0  # truth: 10 ms windows above the talker level minus this are speech
ACTIVE_MARGIN_DB = 15.9  # active speech level: frames within this of it
PITCH, WPM = (20, 85), (140, 190)
REVERB_SHARE, CLICK_SHARE = 0.2, 0.2
CHANNEL_TAPS = 201
PAD = 200  # zeros around each rendered turn before filtering (the filter's half length is 100)

BEEP_FREQS = (425.0, 440.0, 480.0, 800.0, 850.0, 1000.0, 1400.0, 1800.0)
BEEP_KINDS = ("sine", "train", "triple", "dual", "sine", "sine", "train", "sine")  # by index, cyclic
BEEP_DBM0 = (-20.0, -6.0)
MACHINE_KINDS = ("personal", "carrier", "business", "twopart", "personal", "terse", "business", "personal")
MACHINE_KINDS += ("carrier", "personal")  # 40 % personal, 20 % business, 20 % carrier, 10 % each of the others
KIND_OFFSET = {"machine_beep": 0, "machine": 5}  # so that each quick subset starts with different kinds
GREETING_S = (2.5, 15.0)  # speech length of the non-terse machine greetings
HUMAN_LONG_S = (2.0, 4.5)

EN_VOICES = (
    "en-us",
    "en-gb",
    "en-us+f3",
    "en-gb+m3",
    "en-029",
    "en-gb-scotland",
    "en-us-nyc",
    "en-gb-x-rp+f2",
    "en-gb-x-gbclan+m1",
    "en-gb-x-gbcwmd+f4",
    "en-us+m5",
    "en-us+f5",
    "en-us+Alicia",
    "en-gb+Andrea",
)
VOICES = {
    "en": EN_VOICES,
    "de": ("de", "de+f3", "de+m3"),
    "es": ("es", "es+f2", "es-419+m2"),
    "fr": ("fr", "fr+f4", "fr+m1"),
}
OTHER_LANGS = ("de", "es", "fr")

# What people and machines say, per language. "personal" and "business" greetings are composed from slots:
# (pool, least, most) sentences in that order; "carrier" scripts keep their first two sentences and may drop
# later ones; "tail" is the carrier prompt that follows a personal greeting in "twopart".
TEXTS: dict[str, dict] = {
    "en": {
        "short": (
            "Hello?",
            "Hello.",
            "Yes?",
            "Yeah?",
            "Hi.",
            "Hi, this is Mark.",
            "Yes, speaking.",
            "Hello, who is this?",
            "Good morning.",
            "Good afternoon.",
            "Hello, Jane speaking.",
            "Mark here.",
            "Hey.",
            "Hello, yes?",
            "Speaking.",
            "Hello, Smith residence.",
            "Morning!",
            "This is Linda.",
            "Hello, hello?",
            "Yep?",
            "Hey, what's up?",
            "Hello, this is Paul.",
            "Yes, hello?",
            "Hi there.",
            "Hello, can I help you?",
            "Who's calling?",
            "Evening.",
            "Hiya!",
            "Hello, Dave here.",
            "Uh, hello?",
            "Yes, who is it?",
            "Hi, it's Sue.",
        ),
        "again": (
            "Hello?",
            "Anyone there?",
            "Hello, is anyone there?",
            "Hello? Can you hear me?",
            "Who is this?",
            "Hello? I can't hear you.",
            "Hello? Hello?",
        ),
        "long": (
            "Thank you for calling Acme Plumbing, this is Sarah, how can I help you?",
            "Good afternoon, Doctor Smith's office, Maria speaking.",
            "Customer service, my name is John, how may I help you today?",
            "Hello, Riverside Dental, this is Kim speaking. How can I help?",
            "Good morning, First National Bank, Peter speaking. How may I help you?",
            "Hi, you've reached Tom at Baker and Associates. What can I do for you?",
            "Hello, this is Mark Evans. Who am I speaking to, please?",
            "Yes, this is she. Who's calling, please?",
            "Good evening, Grand Hotel reception, Anna speaking. How may I direct your call?",
            "Sales department, this is David. What can I do for you?",
            "Green Valley Vet, this is Emma, how can I help?",
            "Hello, thanks for calling. This is Chris, how can I help you today?",
            "Hi, this is Rachel from the accounts team. How can I help?",
            "IT help desk, you're speaking with Raj. What seems to be the problem?",
            "Good morning, Smith and Jones Solicitors, Helen speaking.",
            "Hello, you're through to the booking office. How can I help?",
            "Hello, the Johnson residence, Karen speaking.",
            "Thank you for holding, this is Michael. How can I help you?",
            "Hi, it's Jenny. Sorry, I'm just driving, what's up?",
            "Hello? Yes, this is Tom. I was expecting your call.",
            "Reception, good afternoon. Who would you like to speak to?",
            "Pizza Palace, good evening. Are you ordering for delivery?",
        ),
        "personal": (
            (
                (
                    "Hi, you've reached Tom.",
                    "Hello, this is Jennifer.",
                    "Hey, it's Mike.",
                    "You've reached the Johnson residence.",
                    "Hi, this is Dave and Karen.",
                    "Hello, you have reached Priya Sharma.",
                    "Hi, this is Alex's phone.",
                    "Hello, you've reached Maria Gonzalez at extension four five two.",
                    "Hey there, you've got Sam.",
                    "Hello, this is Doctor Williams.",
                    "It's Tom.",
                    "Hi, Sam here.",
                    "This is Lisa.",
                ),
                1,
                1,
            ),
            (
                (
                    "I can't come to the phone right now.",
                    "We're not available to take your call at the moment.",
                    "Sorry I missed you.",
                    "I'm either on the other line or away from my desk.",
                    "I'm out of the office until Monday the fourteenth, with limited access to voicemail.",
                    "We're probably out walking the dog.",
                    "I'm on vacation until the third of June.",
                ),
                0,
                2,
            ),
            (
                (
                    "Please leave a message and I'll get back to you.",
                    "Leave your name, number and a short message, and we'll call you back as soon as we can.",
                    "Please leave a message after the beep.",
                    "Leave a message after the tone.",
                    "Please leave your name and number and I'll return your call.",
                    "Tell me who you are and why you called, and I'll call you back.",
                    "Leave a message.",
                    "Leave a message after the beep.",
                ),
                1,
                1,
            ),
            (
                (
                    "If this is urgent, please call my mobile on 0 7 7 0 0, 9 0 0, 1 2 3.",
                    "For anything urgent, please contact my colleague Susan on extension two one four.",
                ),
                0,
                1,
            ),
            (("Thanks!", "Have a great day.", "Bye for now.", "Thanks, bye.", "Talk to you soon."), 0, 1),
        ),
        "business": (
            (
                (
                    "You have reached the offices of Baker and Associates.",
                    "Thank you for calling Acme Plumbing.",
                    "Hello, and thank you for calling Riverside Dental.",
                    "Welcome to Green Valley Veterinary Clinic.",
                    "You've reached the front desk of the Grand Hotel.",
                    "Thank you for calling First National Bank.",
                    "Acme Plumbing, hello.",
                    "Baker and Associates.",
                ),
                1,
                1,
            ),
            (
                (
                    "Our office is currently closed.",
                    "Our hours are Monday to Friday, nine a m to five p m, and Saturday from ten until two.",
                    "All of our staff are busy assisting other customers.",
                    "If this is a medical emergency, please hang up and dial nine one one.",
                    "You can also find us online at w w w dot acme plumbing dot com.",
                    "We are closed for the holiday and will reopen on Tuesday.",
                ),
                0,
                3,
            ),
            (
                (
                    "Please leave your name, number and a brief message, and we will return your call on the next"
                    " business day.",
                    "Please leave a message and someone will get back to you shortly.",
                    "Leave your details after the tone and we will call you back.",
                    "Please leave a message.",
                ),
                1,
                1,
            ),
            (("Thank you.", "Thank you for calling, and have a nice day.", "Goodbye."), 0, 1),
        ),
        "carrier": (
            ("The person you are calling is not available.", "Please leave a message after the tone."),
            ("The subscriber you have dialled cannot take your call.", "Record your message after the tone."),
            (
                "Your call has been forwarded to an automatic voice message system.",
                "5 5 5, 0 1 2 3, is not available.",
                "At the tone, please record your message.",
                "When you have finished recording, you may hang up or press 1 for more options.",
            ),
            (
                "The number you have called, 0 7 9 1 1, 2 3 4, 5 6 7, is not available.",
                "Please leave a message after the tone.",
            ),
            ("Sorry, the person you are calling is busy.", "Please leave a message after the beep."),
            (
                "Welcome to the voicemail service.",
                "The person you are calling is unavailable.",
                "Please leave your message after the tone.",
                "To send a text message instead, press 2.",
            ),
            (
                "Hello, the mobile you are calling is switched off.",
                "Please leave a message after the tone, or send a text.",
            ),
            ("The person you have called is not available right now.", "Please leave a message."),
            ("The person you are calling is unavailable.", "Leave a message."),
        ),
        "tail": (
            "Please leave your message after the tone.",
            "To leave a message, please wait for the tone.",
            "Record your message after the tone. When you are finished, hang up.",
            "Please leave a message.",
        ),
        "terse": (
            "Leave a message.",
            "Not here, leave a message.",
            "Speak after the beep.",
            "It's Sam. Leave a message.",
            "Tom. Message, please.",
            "Leave it at the tone.",
            "You know what to do.",
            "Message, please.",
        ),
    },
    "de": {
        "short": ("Hallo?", "Ja, bitte?", "Müller.", "Ja?", "Hallo, wer ist da?", "Guten Tag.", "Schmidt, hallo?"),
        "again": ("Hallo?", "Ist da jemand?", "Hallo, hören Sie mich?"),
        "long": (
            "Guten Tag, Praxis Doktor Weber, Sie sprechen mit Frau Klein.",
            "Becker und Söhne, mein Name ist Jonas, was kann ich für Sie tun?",
            "Hotel am See, Rezeption, guten Abend, wie kann ich Ihnen helfen?",
            "Kundenservice, Sie sprechen mit Anna Schulz. Wie kann ich helfen?",
        ),
        "personal": (
            (("Hallo, hier ist der Anschluss von Thomas Müller.", "Hallo, hier ist Familie Schneider."), 1, 1),
            (("Ich bin gerade nicht erreichbar.", "Wir sind im Moment leider nicht zu Hause."), 0, 1),
            (
                (
                    "Bitte hinterlassen Sie eine Nachricht nach dem Signalton.",
                    "Sprechen Sie nach dem Piep, ich rufe zurück.",
                ),
                1,
                1,
            ),
            (("Danke!", "Tschüss.", "Vielen Dank für Ihren Anruf."), 0, 1),
        ),
        "business": (
            (
                (
                    "Sie sind verbunden mit der Firma Becker und Söhne.",
                    "Herzlich willkommen in der Praxis Doktor Weber.",
                ),
                1,
                1,
            ),
            (
                (
                    "Leider rufen Sie außerhalb unserer Geschäftszeiten an.",
                    "Unsere Öffnungszeiten sind Montag bis Freitag von acht bis siebzehn Uhr.",
                    "Alle Mitarbeiter sind im Gespräch.",
                ),
                0,
                2,
            ),
            (("Bitte hinterlassen Sie Ihren Namen und Ihre Telefonnummer, wir rufen Sie zurück.",), 1, 1),
            (("Vielen Dank.", "Auf Wiederhören."), 0, 1),
        ),
        "carrier": (
            (
                "Der gewünschte Gesprächspartner ist zurzeit nicht erreichbar.",
                "Bitte hinterlassen Sie eine Nachricht nach dem Signalton.",
            ),
            ("Die Mailbox von 0 1 7 1, 2 3 4 5 6 7.", "Bitte sprechen Sie nach dem Ton."),
        ),
        "tail": ("Bitte sprechen Sie nach dem Signalton.",),
        "terse": ("Bitte eine Nachricht.", "Nachricht nach dem Piep."),
    },
    "es": {
        "short": ("¿Diga?", "¿Bueno?", "¿Sí?", "Hola.", "¿Aló?", "Hola, ¿quién es?", "Buenos días."),
        "again": ("¿Hola?", "¿Hay alguien?", "¿Me oye?"),
        "long": (
            "Clínica dental Sonrisa, buenas tardes, le atiende Lucía.",
            "Gracias por llamar a Ferretería López, soy Carlos, ¿en qué puedo ayudarle?",
            "Servicio al cliente, le atiende María, ¿en qué le puedo ayudar?",
            "Hotel Miramar, recepción, buenas noches. ¿Con quién desea hablar?",
        ),
        "personal": (
            (("Hola, has llamado a Javier.", "Hola, este es el contestador de la familia García."), 1, 1),
            (("En este momento no puedo atenderte.", "Ahora no estamos en casa."), 0, 1),
            (("Deja tu mensaje después de la señal y te llamaré.", "Por favor, deje su nombre y su teléfono."), 1, 1),
            (("¡Gracias!", "Hasta luego."), 0, 1),
        ),
        "business": (
            (("Ha llamado a Ferretería López.", "Bienvenido a la Clínica dental Sonrisa."), 1, 1),
            (
                (
                    "Nuestro horario es de lunes a viernes, de nueve a dos.",
                    "En este momento la oficina está cerrada.",
                    "Todos nuestros agentes están ocupados.",
                ),
                0,
                2,
            ),
            (("Deje su mensaje después de la señal y le devolveremos la llamada.",), 1, 1),
            (("Muchas gracias.", "Hasta pronto."), 0, 1),
        ),
        "carrier": (
            ("El número al que llama no está disponible en este momento.", "Deje su mensaje después de la señal."),
            (
                "El teléfono móvil al que llama está apagado o fuera de cobertura.",
                "Puede dejar un mensaje después de la señal.",
            ),
        ),
        "tail": ("Deje su mensaje después de la señal.",),
        "terse": ("Deja un mensaje.", "Mensaje después del tono."),
    },
    "fr": {
        "short": ("Allô ?", "Oui, allô ?", "Oui ?", "Bonjour.", "Allô, qui est à l'appareil ?", "Oui, c'est moi."),
        "again": ("Allô ?", "Il y a quelqu'un ?", "Allô, vous m'entendez ?"),
        "long": (
            "Cabinet du docteur Martin, bonjour, Sophie à l'appareil.",
            "Plomberie Dupont, bonjour, je suis Julien, que puis-je faire pour vous ?",
            "Service client, Camille à votre écoute, comment puis-je vous aider ?",
            "Hôtel du Lac, réception, bonsoir. Que puis-je faire pour vous ?",
        ),
        "personal": (
            (("Bonjour, vous êtes bien chez Pierre.", "Salut, c'est Claire."), 1, 1),
            (("Je ne suis pas disponible pour le moment.", "Nous sommes absents."), 0, 1),
            (("Laissez-moi un message après le bip, je vous rappelle.", "Merci de laisser vos coordonnées."), 1, 1),
            (("Merci !", "À bientôt."), 0, 1),
        ),
        "business": (
            (("Vous êtes bien à la Plomberie Dupont.", "Bienvenue au cabinet du docteur Martin."), 1, 1),
            (
                (
                    "Nos bureaux sont ouverts du lundi au vendredi, de neuf heures à dix-huit heures.",
                    "Nos bureaux sont actuellement fermés.",
                    "Tous nos conseillers sont occupés.",
                ),
                0,
                2,
            ),
            (("Laissez votre nom et votre numéro après le bip, nous vous rappellerons.",), 1, 1),
            (("Merci de votre appel.", "Au revoir."), 0, 1),
        ),
        "carrier": (
            ("Votre correspondant n'est pas disponible pour le moment.", "Laissez un message après le bip sonore."),
            ("Bonjour, vous êtes sur la messagerie du 0 6, 1 2, 3 4, 5 6, 7 8.", "Laissez votre message après le bip."),
        ),
        "tail": ("Laissez votre message après le bip sonore.",),
        "terse": ("Laissez un message.", "Message après le bip."),
    },
}


@dataclass(frozen=True, slots=True)
class Case:
    """One answered call: what the far end sent from answer on, and when its speech and beep happen."""

    name: str
    category: str
    truth: str  # "human" | "machine" | "unknown"
    pcm: np.ndarray  # int16, 8 kHz mono
    speech_start_ms: float | None
    greeting_end_ms: float | None
    beep_start_ms: float | None
    beep_end_ms: float | None
    text: str = ""  # what the greeting (a person's first utterance) says; none for silence

    @property
    def seconds(self) -> float:
        return len(self.pcm) / RATE

    @property
    def lang(self) -> str:
        """The language spoken, from the espeak-ng voice in the name ("en" for silence)."""
        voice = self.name.split("/")[1]
        return next((lang for lang in OTHER_LANGS if voice.startswith(lang)), "en")


@dataclass(frozen=True, slots=True)
class _Speaker:
    voice: str
    pitch: int
    wpm: int
    gap: int  # espeak-ng -g, word gap in 10 ms units


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


def _ms(n: float) -> float:
    return n * 1000 / RATE


def _samples(ms: float) -> int:
    return round(ms * RATE / 1000)


def _rms(dbm0: float) -> float:
    """RMS (int16 units) of a signal at `dbm0`."""
    return DBM0_RMS * 10 ** (dbm0 / 20)


def _slug(text: str, words: int = 4) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "-".join(re.findall(r"[a-z0-9']+", ascii_text.lower().replace("'", ""))[:words])


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.?!])\s+", text.strip()) if s]


# ------------------------------------------------------------------------------------------------ speech


def espeak_version() -> str:
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    return out.split("Data at")[0].strip()


@functools.lru_cache(maxsize=4096)
def _espeak(speaker: _Speaker, text: str) -> np.ndarray:
    """One espeak-ng utterance at 8 kHz (int16, read-only), trimmed of the padding espeak-ng adds."""
    cmd = ["espeak-ng", "-v", speaker.voice, "-p", str(speaker.pitch), "-s", str(speaker.wpm)]
    wav = subprocess.run([*cmd, "-g", str(speaker.gap), "--stdout", text], capture_output=True, check=True).stdout
    x = np.frombuffer(audio.decode_wav(wav, f"espeak-ng {speaker.voice}"), dtype=np.int16)
    magnitude = np.abs(x.astype(np.int32))
    loud = np.nonzero(magnitude > 1e-3 * max(int(magnitude.max()), 1))[0]
    if loud.size == 0:
        raise RuntimeError(f"espeak-ng {speaker.voice} rendered silence for {text!r}")
    x = x[loud[0] : loud[-1] + 1].copy()
    x.flags.writeable = False
    return x


def _render(speaker: _Speaker, sentences: list[str], split_gaps_ms: list[float] | None) -> np.ndarray:
    """A turn: one espeak-ng call (its own pauses), or with `split_gaps_ms` one call per sentence, gaps between."""
    if split_gaps_ms is None or len(sentences) == 1:
        return _espeak(speaker, " ".join(sentences)).astype(float)
    parts: list[np.ndarray] = []
    for i, sentence in enumerate(sentences):
        if i:
            parts.append(np.zeros(_samples(split_gaps_ms[(i - 1) % len(split_gaps_ms)])))
        parts.append(_espeak(speaker, sentence).astype(float))
    return np.concatenate(parts)


def _active_power(x: np.ndarray) -> float:
    """Mean power of the 10 ms frames within ACTIVE_MARGIN_DB of that mean (iterated to a fixed point)."""
    n = len(x) // 80 * 80
    p = (x[:n].reshape(-1, 80) ** 2).mean(axis=1)
    p = p[p > 0]
    a = float(p.mean())
    for _ in range(20):
        b = float(p[p >= a * 10 ** (-ACTIVE_MARGIN_DB / 10)].mean())
        if b == a:
            break
        a = b
    return a


def _span(x: np.ndarray, threshold: float) -> tuple[int, int] | None:
    """(onset, end) in samples: the first sample whose trailing 10 ms window has a mean power above
    `threshold`, and one past the last sample whose leading 10 ms window has. Exact for a step on silence."""
    w = 80
    c = np.concatenate(([0.0], np.cumsum(x * x)))
    e = (c[w:] - c[:-w]) / w  # e[k]: mean power of x[k : k + w]
    above = np.nonzero(e > threshold)[0]
    if above.size == 0:
        return None
    return int(above[0]) + w - 1, int(above[-1]) + 1


def _seconds_of(x: np.ndarray) -> float:
    """Speech length of a rendered turn, as the truth measures it (before the channel)."""
    span = _span(x, _active_power(x) * 10 ** (-SPAN_THRESHOLD_DB / 10))
    return 0.0 if span is None else (span[1] - span[0]) / RATE


def _speaker(rng: np.random.Generator, lang: str) -> _Speaker:
    voices = VOICES[lang]
    gap = int(rng.choice((0, 0, 0, 0, 1, 2, 3)))
    pitch, wpm = int(rng.integers(PITCH[0], PITCH[1] + 1)), int(rng.integers(WPM[0], WPM[1] + 1))
    return _Speaker(str(voices[int(rng.integers(len(voices)))]), pitch, wpm, gap)


def _split_gaps(rng: np.random.Generator) -> list[float] | None:
    """How a multi-sentence turn is rendered: None for one espeak-ng call, else the gaps between sentences."""
    return None if rng.random() < 0.5 else [float(g) for g in rng.uniform(200, 600, 8)]


# ------------------------------------------------------------------------------------------- composition


@dataclass(slots=True)
class _Plan:
    """What a case says: its turns (rendered, raw) and how they are used."""

    key: str
    speaker: _Speaker
    turns: list[np.ndarray]
    greeting_turns: int  # the first this many turns are the greeting, the rest a later "Hello?"
    text: str  # what the greeting says


def _lang(i: int) -> str:
    return OTHER_LANGS[(i // 9) % 3] if i % 9 == 3 else "en"


def _plan_human(category: str, i: int, rng: np.random.Generator) -> _Plan:
    lang = _lang(i)
    texts = TEXTS[lang]
    speaker = _speaker(rng, lang)
    gaps = _split_gaps(rng)
    again = rng.random() < (0.5 if category == "human_short" else 0.4)
    again_text = str(rng.choice(texts["again"]))
    if category == "human_short":
        text = str(rng.choice(texts["short"]))
        turns = [_render(speaker, _sentences(text), gaps)]
    else:
        order = rng.permutation(len(texts["long"]))
        for attempt in range(len(order)):
            text = texts["long"][order[attempt]]
            turn = _render(speaker, _sentences(text), gaps)
            seconds = _seconds_of(turn)
            lo, hi = HUMAN_LONG_S[0] + 0.05, HUMAN_LONG_S[1] - 0.05
            if not lo <= seconds <= hi:  # one try at another speed, as a faster or slower talker
                target = float(np.clip(seconds, lo + 0.2, hi - 0.2))
                wpm = int(np.clip(round(speaker.wpm * seconds / target), *WPM))
                if wpm != speaker.wpm:
                    faster = _Speaker(speaker.voice, speaker.pitch, wpm, speaker.gap)
                    turn2 = _render(faster, _sentences(text), gaps)
                    if lo <= _seconds_of(turn2) <= hi:
                        speaker, turn, seconds = faster, turn2, _seconds_of(turn2)
            if lo <= seconds <= hi:
                turns = [turn]
                break
        else:
            raise RuntimeError(f"{category}#{i}: no phrase fits {HUMAN_LONG_S} s for {speaker}")
    if again:
        turns.append(_render(speaker, _sentences(again_text), gaps))
    return _Plan(_slug(text), speaker, turns, 1, text)


def _compose(slots: tuple, rng: np.random.Generator, target_s: float, wpm: int) -> list[list[str]]:
    """Sentences per slot: each slot's least (from its shorter half when the target is short), then optional
    ones in random order while the estimated length is short of the target."""
    chosen: list[list[str]] = []
    optional: list[tuple[int, str]] = []
    for k, (pool, least, most) in enumerate(slots):
        if least and target_s < 6.0:
            pool = sorted(pool, key=len)[: (len(pool) + 1) // 2]
        picks = [str(s) for s in rng.permutation(pool)[:most]]
        chosen.append(picks[:least])
        optional += [(k, s) for s in picks[least:]]
    optional = [optional[j] for j in rng.permutation(len(optional))]
    while optional and _estimate(chosen, wpm) < target_s:
        k, s = optional.pop()
        chosen[k].append(s)
    return chosen


def _estimate(chosen: list[list[str]], wpm: int) -> float:
    """Rough espeak-ng speech length: about 0.098 characters per second per wpm, plus sentence pauses."""
    sentences = [s for slot in chosen for s in slot]
    return sum(len(s) for s in sentences) / (0.098 * wpm) + 0.4 * max(len(sentences) - 1, 0)


def _plan_machine(category: str, i: int, rng: np.random.Generator) -> _Plan:
    lang = _lang(i)
    texts = TEXTS[lang]
    kind = MACHINE_KINDS[(i + KIND_OFFSET[category]) % len(MACHINE_KINDS)]
    speaker = _speaker(rng, lang)
    gaps = _split_gaps(rng)
    target = float(rng.uniform(*GREETING_S))
    if kind == "terse":
        text = str(rng.choice(texts["terse"]))
        return _Plan(kind, speaker, [_render(speaker, _sentences(text), gaps)], 1, text)
    tail: np.ndarray | None = None
    tail_text = ""
    if kind == "carrier":
        script = texts["carrier"][int(rng.integers(len(texts["carrier"])))]
        slots: tuple = ((script[:2], 2, 2), *((script[k : k + 1], 0, 1) for k in range(2, len(script))))
        chosen = [list(script[:2])] + [[s] for s in script[2:]]
        drop_order = list(range(len(chosen) - 1, 0, -1))
    else:
        slots = texts["personal" if kind in ("personal", "twopart") else "business"]
        if kind == "twopart":  # the personal greeting leaves the instructions to the carrier's prompt
            slots = slots[:2] + slots[3:]  # every language's personal slots are intro, away, leave, ...
            tail_speaker = _speaker(rng, lang)
            tail_text = str(rng.choice(texts["tail"]))
            tail = _render(tail_speaker, _sentences(tail_text), _split_gaps(rng))
        chosen = _compose(slots, rng, target - (_seconds_of(tail) + 0.6 if tail is not None else 0.0), speaker.wpm)
        drop_order = [k for k, (_, least, _) in enumerate(slots) if least == 0]
    extra_s = _seconds_of(tail) + 0.9 if tail is not None else 0.0
    while True:
        turn = _render(speaker, [s for slot in chosen for s in slot], gaps)
        seconds = _seconds_of(turn) + extra_s
        if seconds > GREETING_S[1] - 0.1:
            droppable = [k for k in drop_order if len(chosen[k]) > slots[k][1]]
            if droppable:
                chosen[droppable[0]].pop()
                continue
            speaker = _Speaker(speaker.voice, speaker.pitch, WPM[1], speaker.gap)  # a fast talker, then
            turn = _render(speaker, [s for slot in chosen for s in slot], gaps)
        elif seconds < GREETING_S[0] + 0.1:
            addable = [k for k in range(len(slots)) if len(chosen[k]) < slots[k][2]]
            if addable and kind != "carrier":
                k = addable[int(rng.integers(len(addable)))]
                left = [str(s) for s in slots[k][0] if s not in chosen[k]]
                chosen[k].append(left[int(rng.integers(len(left)))])
                continue
            if speaker.wpm > WPM[0]:
                speaker = _Speaker(speaker.voice, speaker.pitch, WPM[0], speaker.gap)  # a slow talker
                turn = _render(speaker, [s for slot in chosen for s in slot], gaps)
        break
    turns = [turn] if tail is None else [turn, tail]
    text = " ".join([s for slot in chosen for s in slot] + ([tail_text] if tail is not None else []))
    return _Plan(kind, speaker, turns, len(turns), text)


# --------------------------------------------------------------------------------------- acoustic chain


def _bandpass(lo_hz: float, hi_hz: float, taps: int = CHANNEL_TAPS) -> np.ndarray:
    """Linear-phase FIR band-pass (Hamming-windowed difference of two sincs), unity gain in the band."""
    n = np.arange(taps) - (taps - 1) / 2
    h = (2 * hi_hz / RATE) * np.sinc(2 * hi_hz / RATE * n) - (2 * lo_hz / RATE) * np.sinc(2 * lo_hz / RATE * n)
    h *= np.hamming(taps)
    f0 = np.sqrt(lo_hz * hi_hz)
    return h / abs(np.sum(h * np.exp(-2j * np.pi * f0 / RATE * np.arange(taps))))


def _convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """x * h by FFT, `same` alignment for a linear-phase h of odd length (no delay)."""
    n = len(x) + len(h) - 1
    size = 1 << (n - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[:n]
    d = (len(h) - 1) // 2
    return y[d : d + len(x)]


def _reverb(rng: np.random.Generator) -> np.ndarray:
    """A room: the direct path, then exponentially decaying noise (causal; centred for `_convolve`)."""
    rt60 = rng.uniform(0.15, 0.45)
    drr_db = rng.uniform(4.0, 12.0)
    n = round(rt60 * RATE)
    t = np.arange(n) / RATE
    tail = rng.normal(0, 1, n) * np.exp(-6.91 * t / rt60)
    tail[: _samples(rng.uniform(2, 10))] = 0.0  # pre-delay of the first reflections
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail**2))
    h = np.concatenate((np.zeros(n - 1), [1.0], np.zeros(n - 1)))
    h[n:] += tail[1:]
    return h


def _noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink (-3 dB/octave) or brown (-6 dB/octave) Gaussian noise, unit-ish scale."""
    white = rng.normal(0, 1, n)
    if kind == "white":
        return white
    f = np.fft.rfftfreq(n, 1 / RATE)
    shape = 1 / np.maximum(f, 20.0) ** (0.5 if kind == "pink" else 1.0)
    return np.fft.irfft(np.fft.rfft(white) * shape, n)


def _clicks(n: int, rng: np.random.Generator) -> np.ndarray:
    """One or two clicks (a decaying resonance of a few ms) at random places, -30 to -10 dBm0 peak."""
    out = np.zeros(n)
    for _ in range(int(rng.integers(1, 3))):
        m = 48
        k = np.arange(m)
        peak = DBM0_SINE_PEAK * 10 ** (rng.uniform(-30, -10) / 20)
        click = np.exp(-k / rng.uniform(4, 16)) * np.sin(2 * np.pi * rng.uniform(500, 3000) / RATE * k + 1.0)
        pos = int(rng.integers(0, n - m))
        out[pos : pos + m] += peak * click / np.abs(click).max()
    return out


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _beep(rng: np.random.Generator, kind: str) -> np.ndarray:
    """The machine's beep of `kind` (sine, dual, triple, train) as float, int16 units."""

    def freq() -> float:
        if rng.random() < 0.6:
            return float(BEEP_FREQS[int(rng.integers(len(BEEP_FREQS)))])
        return float(round(rng.uniform(400, 2000)))

    def burst(freqs: list[float], ms: float, level: float) -> np.ndarray:
        n = _samples(ms)
        t = np.arange(n) / RATE
        x = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in freqs)
        x = np.asarray(x) * DBM0_SINE_PEAK * 10 ** (level / 20) / np.sqrt(len(freqs))  # total power at level
        ramp = min(_samples(rng.uniform(3, 15)), n // 3)
        env = np.ones(n)
        env[:ramp] = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        env[n - ramp :] = env[:ramp][::-1]
        return x * env

    level = float(rng.uniform(*BEEP_DBM0))
    if kind == "train":
        f1 = freq()
        f2 = f1 if rng.random() < 0.6 else freq()
        gap = np.zeros(_samples(rng.uniform(80, 250)))
        x = np.concatenate(
            (burst([f1], _log_uniform(rng, 100, 400), level), gap, burst([f2], _log_uniform(rng, 100, 400), level))
        )
        return x
    count = {"sine": 1, "dual": 2, "triple": 3}[kind]
    freqs: list[float] = []
    while len(freqs) < count:
        f = freq()
        if all(abs(f - g) > 30 for g in freqs):
            freqs.append(f)
    return burst(freqs, _log_uniform(rng, 100, 1500), level)


def _finish(x: np.ndarray, law: str) -> np.ndarray:
    """Rounds to int16 (saturating), then G.711 `law` and back."""
    pcm = np.clip(np.rint(x), -32768, 32767).astype(np.int16)
    if law == "ulaw":
        return np.frombuffer(g711.ulaw_decode(g711.ulaw_encode(pcm)), dtype=np.int16).copy()
    return np.frombuffer(g711.alaw_decode(g711.alaw_encode(pcm)), dtype=np.int16).copy()


def _line(rng: np.random.Generator, n: int, taps: np.ndarray, noise_dbm0: float) -> np.ndarray:
    """Background noise (in band, at `noise_dbm0` RMS) and, in some cases, clicks, through the channel."""
    kind = str(rng.choice(("white", "pink", "pink", "brown")))
    noise = _convolve(_noise(kind, n, rng), taps)
    noise *= _rms(noise_dbm0) / np.sqrt(np.mean(noise**2))
    if rng.random() < CLICK_SHARE:
        noise += _convolve(_clicks(n, rng), taps)
    return noise


def _speech_case(category: str, i: int) -> Case:
    plan = (_plan_human if category.startswith("human") else _plan_machine)(category, i, _rng(f"{category}#{i}"))
    sp = plan.speaker
    name = f"{category}/{sp.voice}/p{sp.pitch}s{sp.wpm}/{plan.key}-{i}"
    rng = _rng(name)

    taps = _bandpass(rng.uniform(200, 350), rng.uniform(3200, 3500))
    room = _reverb(rng) if rng.random() < REVERB_SHARE else None
    talker = float(rng.uniform(*TALKER_DBM0))
    threshold = _rms(talker) ** 2 * 10 ** (-SPAN_THRESHOLD_DB / 10)
    levels = [talker] + [
        talker + (rng.uniform(-4, 4) if k < plan.greeting_turns else rng.uniform(0, 4))
        for k in range(1, len(plan.turns))
    ]

    # each turn through the room and the channel, at its level; its span from the dry version
    turns = []
    for raw, level in zip(plan.turns, levels, strict=True):
        dry = np.concatenate((np.zeros(PAD), raw, np.zeros(PAD + (len(room) // 2 if room is not None else 0))))
        wet = _convolve(dry, room) if room is not None else dry
        dry, wet = _convolve(dry, taps), _convolve(wet, taps)
        gain = _rms(level) / np.sqrt(_active_power(wet))
        span = _span(dry * gain, threshold)
        assert span is not None, name
        turns.append((wet * gain, span))

    # timeline: where each turn's onset falls, then the silences and the beep
    human = category.startswith("human")
    min_gap = 1500 if category == "human_short" else 2000  # ms before a person says "Hello?" again
    onset = _samples(rng.uniform(*ONSET_MS))  # the same for people and machines (see Fairness)
    onsets = [onset]
    end = onset + turns[0][1][1] - turns[0][1][0]
    ends = [end]
    for k in range(1, len(turns)):
        gap = rng.uniform(300, 900) if k < plan.greeting_turns else rng.uniform(min_gap, 3000)
        onsets.append(ends[-1] + _samples(gap))
        ends.append(onsets[-1] + turns[k][1][1] - turns[k][1][0])
    greeting_end = ends[plan.greeting_turns - 1]
    beep = None
    if human:
        lo, hi = (6.0, 10.0) if category == "human_short" else (8.0, 10.0)
        total = _samples(rng.uniform(lo, hi) * 1000)
        if len(turns) > 1:  # the later "Hello?" ends 500 ms before the case does, at the latest
            latest = _samples(hi * 1000 - 500) - (ends[1] - onsets[1])
            if onsets[1] > latest:  # move it earlier, down to the shortest gap, or drop it
                if latest >= greeting_end + _samples(min_gap):
                    ends[1] -= onsets[1] - latest
                    onsets[1] = latest
                else:
                    turns, onsets, ends = turns[:1], onsets[:1], ends[:1]
        total = max(total, ends[-1] + _samples(500))
    elif category == "machine_beep":
        beep_x = _beep(rng, BEEP_KINDS[i % len(BEEP_KINDS)])
        beep_start = greeting_end + _samples(rng.uniform(200, 800))
        beep = (beep_start, beep_start + len(beep_x), beep_x)
        total = beep[1] + _samples(rng.uniform(2000, 4000))
    else:
        tail_ms = rng.uniform(3000, 5000) if rng.random() < 0.7 else rng.uniform(6000, 9000)
        total = greeting_end + _samples(tail_ms)

    x = np.zeros(total)
    for (audio_x, (s0, _s1)), at in zip(turns, onsets, strict=True):
        start = at - s0  # where the turn's array begins so that its onset falls at `at`
        a, b = max(start, 0), min(start + len(audio_x), total)
        x[a:b] += audio_x[a - start : b - start]
    if beep is not None:
        x[beep[0] : beep[1]] += beep[2]
    snr = rng.uniform(*QUIET_SNR_DB) if rng.random() < QUIET_SHARE else rng.uniform(*SNR_DB)
    x += _line(rng, total, taps, talker - snr)
    pcm = _finish(x, str(rng.choice(("ulaw", "alaw"))))
    return Case(
        name,
        category,
        TRUTH[category],
        pcm,
        _ms(onsets[0]),
        _ms(greeting_end),
        _ms(beep[0]) if beep is not None else None,
        _ms(beep[1]) if beep is not None else None,
        plan.text,
    )


def _silence_case(i: int) -> Case:
    plan_rng = _rng(f"silence#{i}")
    level = float(plan_rng.uniform(*SILENCE_NOISE_DBM0))
    name = f"silence/n{-level:.0f}dBm0-{i}"
    rng = _rng(name)
    taps = _bandpass(rng.uniform(200, 350), rng.uniform(3200, 3500))
    total = _samples(rng.uniform(6000, 10000))
    x = _line(rng, total, taps, level)
    return Case(name, "silence", "unknown", _finish(x, str(rng.choice(("ulaw", "alaw")))), None, None, None, None)


def case(category: str, i: int) -> Case:
    """The i-th case of a category (the same in the full and the quick set)."""
    if category == "silence":
        return _silence_case(i)
    return _speech_case(category, i)


def _generate(quick: bool) -> list[Case]:
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (Debian package espeak-ng)")
    counts = QUICK_COUNTS if quick else FULL_COUNTS
    try:
        return [case(category, i) for category in CATEGORIES for i in range(counts[category])]
    finally:
        _espeak.cache_clear()


def _cache_key() -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(espeak_version().encode())
    for module in (resample, g711_kernel):
        h.update(Path(str(module.__file__)).read_bytes())
    return h.hexdigest()[:16]


def build(quick: bool = False) -> list[Case]:
    """The set, in CATEGORIES order. The full set is cached under bench/out/amd/ (keyed by this file, the
    espeak-ng version and the compiled resampler and G.711 kernels); the quick set is always generated."""
    if quick:
        return _generate(True)
    path = CACHE / f"set-full-{_cache_key()}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            meta, times = z["meta"].tolist(), z["times"]
            return [
                Case(name, category, truth, z[f"a{k}"], *(None if np.isnan(v) else float(v) for v in times[k]), text)
                for k, (category, name, truth, text) in enumerate(meta)
            ]
    cases = _generate(False)
    CACHE.mkdir(parents=True, exist_ok=True)
    meta = np.array([(c.category, c.name, c.truth, c.text) for c in cases])
    times = np.array(
        [
            [np.nan if v is None else v for v in (c.speech_start_ms, c.greeting_end_ms, c.beep_start_ms, c.beep_end_ms)]
            for c in cases
        ],
        dtype=float,
    )
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, meta=meta, times=times, **{f"a{k}": c.pcm for k, c in enumerate(cases)})
    tmp.replace(path)
    for stale in CACHE.glob("set-full-*.npz"):
        if stale != path:
            stale.unlink()
    return cases


def summary(cases: list[Case]) -> str:
    """Per category: count, seconds, and the range of greeting lengths (speech start to greeting end)."""
    lines = [f"{'category':<13} {'cases':>5} {'seconds':>8}  greeting s (min-max)  beeps"]
    for category in CATEGORIES:
        group = [c for c in cases if c.category == category]
        greetings = [
            (c.greeting_end_ms - c.speech_start_ms) / 1000
            for c in group
            if c.greeting_end_ms is not None and c.speech_start_ms is not None
        ]
        span = f"{min(greetings):5.2f} - {max(greetings):5.2f}" if greetings else "      -      "
        beeps = sum(c.beep_start_ms is not None for c in group)
        lines.append(f"{category:<13} {len(group):>5} {sum(c.seconds for c in group):8.1f}  {span:<20}  {beeps:>5}")
    lines.append(f"{'total':<13} {len(cases):>5} {sum(c.seconds for c in cases):8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="the 16-case quick set (never cached)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    cases = build(quick=args.quick)
    print(summary(cases))
    print(f"built in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
