"""Programmable call flows: instructions fetched from an application's URL (our JSON verbs or TwiML), run on
a call by the flow runner, with text to speech."""
