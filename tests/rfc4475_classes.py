"""How RFC 4475's torture messages divide (from the corpus README), shared by the parser and live tests."""

VALID_REQUESTS = (
    "wsinv intmeth esc01 escnull esc02 lwsdisp longreq dblreq semiuri transports mpart01 badbranch "
    "unksm2 cparam01 cparam02 regescrt inv2543 zeromf regaut01"
).split()
VALID_RESPONSES = "unreason noreason bcast".split()
INVALID_REQUESTS = (
    "badinv01 clerr ncl scalar02 quotbal ltgtruri lwsruri baddn badvers mismatch01 mismatch02 insuf multi01 mcl01"
).split()
INVALID_RESPONSES = "scalarlg bigcode".split()
LIBERAL = "lwsstart trws escruri baddate regbadct badaspec".split()
# the codes these must get, whoever answers
SEMANTIC = {"unkscm": {416}, "novelsc": {416}, "bext01": {420}, "invut": {415}, "sdp01": {406, 488}}
