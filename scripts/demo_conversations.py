"""Write parley's sample conversations: parley/samples/conversations.jsonl and labels.jsonl.

The conversations are made up for parley (no data set is read or copied): contact-centre dialogues
about billing, deliveries, cancellations, accounts, technical faults, complaints and sales. Each one
follows a *flow* (a sequence of steps, some optional, some with alternatives) and each step draws a
phrasing from a *pool* of hand-written utterances that share one set of labels: intent, sentiment and
dialogue act. Pools are drawn like a shuffled deck, so a phrasing comes back only after the whole pool
was used, and slots ({order}, {amount}, {product}, ...) vary the details; a held-out conversation
therefore mostly says things in words the demo student did not see in training.

    .venv/bin/python scripts/demo_conversations.py [DIR]   # rewrite the two files (seeded: same output)

Labelling rules, so the labels are learnable from the text alone:
  intent        the topic the utterance itself reveals (billing_question, order_status, cancel,
                account, tech_support, purchase, complaint), the social moves (greeting, thanks,
                goodbye), and ``other`` for utterances whose topic the words do not show ("It's 4417.").
  sentiment     negative for frustration, complaints and bad news the speaker minds; positive for
                thanks, praise and good news; neutral otherwise (an agent's apology is neutral).
  dialogue_act  DailyDialog's four: inform (statements), question (wh- and yes/no questions),
                directive (requests and instructions: "Please ...", "Could you give me ..."),
                commissive (promises, offers, accepting or declining them: "I'll ...", "I'll take it").
"""

from __future__ import annotations

import json
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "parley" / "samples"
SEED = 15

# pool name -> (speaker, intent, sentiment, dialogue act, phrasings). A step "y@x" answers step x: it
# takes y's phrasing at the index x's phrasing had, so pools written in matching order pair up.
POOLS: dict[str, tuple[str, str, str, str, list[str]]] = {
    # -- openings and identification --------------------------------------------------------------
    "a_greet": (
        "agent",
        "greeting",
        "neutral",
        "question",
        [
            "Hello, you're through to customer support. How can I help today?",
            "Hi, thanks for getting in touch. What can I do for you?",
            "Good morning, this is {agent}. How may I help you?",
            "Hi there, how can I help?",
            "Welcome to the help desk. What brings you here today?",
            "Hello, {agent} speaking. What can I help you with?",
            "Good afternoon, you're chatting with {agent}. What can I do for you today?",
        ],
    ),
    "c_greet": (
        "customer",
        "greeting",
        "neutral",
        "inform",
        [
            "Hi.",
            "Hello there.",
            "Good morning.",
            "hey",
            "Hi, good afternoon.",
            "Hello, hope you're well.",
            "Hiya.",
        ],
    ),
    "a_identify": (
        "agent",
        "other",
        "neutral",
        "directive",
        [
            "Can I take your full name, please?",
            "Please confirm your full name and postcode.",
            "For security, could you confirm the first line of your address?",
            "Before we start, please give me your name as it appears on the account.",
        ],
    ),
    "c_name": (
        "customer",
        "other",
        "neutral",
        "inform",
        [
            "{name}.",
            "Yes, it's {name}, {postcode}.",
            "{street}.",
            "It's {name}.",
        ],
    ),
    "a_hold": (
        "agent",
        "other",
        "neutral",
        "commissive",
        [
            "One moment, I'll look into that for you.",
            "I'll pull that up now.",
            "Let me have a look for you.",
            "I'll check what happened, bear with me.",
            "Let me see what I can find.",
        ],
    ),
    # -- billing ----------------------------------------------------------------------------------
    "c_bill_problem": (
        "customer",
        "billing_question",
        "negative",
        "inform",
        [
            "I've been charged twice for my {plan} subscription this month.",
            "There are two payments of {amount} on my statement and I only ordered once.",
            "My card was billed again even though I paid the invoice on {date}.",
            "You charged me {amount} for something I never signed up for.",
            "The direct debit went out twice this month and now I'm overdrawn.",
            "I got a bill for {amount} but my plan is only meant to be {amount2}.",
            "my bank app shows a payment to you I don't recognise",
        ],
    ),
    "c_bill_problem_q": (
        "customer",
        "billing_question",
        "negative",
        "question",
        [
            "Why have I been charged {amount} twice?",
            "Why is there a {amount} charge on my card from you?",
            "How did my bill end up at {amount} this month?",
            "What is this extra charge of {amount} on my invoice?",
            "Why did my price go up without anyone telling me?",
        ],
    ),
    "a_ask_card": (
        "agent",
        "billing_question",
        "neutral",
        "directive",
        [
            "Could you give me the last four digits of the card, please?",
            "Please confirm the last four digits of the card you paid with.",
            "Could you read me the last four digits on the card?",
            "Please give me the card's last four digits so I can find the payment.",
        ],
    ),
    "c_card": (
        "customer",
        "other",
        "neutral",
        "inform",
        [
            "Sure, it ends in {card}.",
            "The last four are {card}.",
            "Yes, {card}.",
            "ends in {card}",
            "{card}, it's a debit card.",
        ],
    ),
    "a_bill_explain": (
        "agent",
        "billing_question",
        "neutral",
        "inform",
        [
            "I can see two charges of {amount} on {date}; one of them is a duplicate.",
            "The extra {amount} is the annual renewal fee that was due this month.",
            "The second payment is a pre-authorisation and it will drop off in a few days.",
            "The payment was retried after the first attempt timed out, so it went through twice.",
            "Your invoice includes {amount} for the extra seat added on {date}.",
        ],
    ),
    "a_refund": (
        "agent",
        "billing_question",
        "positive",
        "commissive",
        [
            "I've issued a refund of {amount}; it should reach your card within five working days.",
            "I'll refund the duplicate payment today.",
            "I've credited {amount} back to your account.",
            "I'll reverse that charge and email you a confirmation.",
            "I've removed the fee and refunded the difference to your card.",
            "I'll put a credit of {amount} on your next bill to make up for it.",
        ],
    ),
    "c_refund_when": (
        "customer",
        "billing_question",
        "neutral",
        "question",
        [
            "So will I get the money back?",
            "When will the refund show up on my statement?",
            "How long does a refund take?",
            "Will the credit show on my next invoice?",
        ],
    ),
    "c_bill_q": (
        "customer",
        "billing_question",
        "neutral",
        "question",
        [
            "What does the 'service adjustment' line on my bill mean?",
            "When is my next payment due?",
            "How do I change the card I pay with?",
            "Why is this month's bill different from last month's?",
            "Is VAT included in the {amount} on my invoice?",
            "Can I pay by bank transfer instead of card?",
        ],
    ),
    "a_bill_answer": (
        "agent",
        "billing_question",
        "neutral",
        "inform",
        [
            "The service adjustment is a pro-rated amount for the days before your plan changed.",
            "Your next payment is taken on the {daynum} of {month}.",
            "You can change the card under Billing in your account settings.",
            "Your bill went up because the introductory discount ended last month.",
            "Yes, VAT is already included in that amount.",
            "Bank transfer works too; the details are at the bottom of each invoice.",
        ],
    ),
    "c_bill_followup": (
        "customer",
        "billing_question",
        "neutral",
        "question",
        [
            "Will it be back to normal next month?",
            "Can I switch to paying yearly instead?",
            "Is that taken on the same date every month?",
            "Do I get a receipt for each payment?",
            "Will I be charged extra if I change plan mid-month?",
        ],
    ),
    "a_bill_followup": (
        "agent",
        "billing_question",
        "neutral",
        "inform",
        [
            "It stays at the new price unless you change plan.",
            "Yearly billing is available and saves two months' fees.",
            "It's always taken on the same date, yes.",
            "A receipt is emailed after every payment.",
            "Changing mid-month only costs the difference for the days left.",
        ],
    ),
    "a_price_applied": (
        "agent",
        "billing_question",
        "positive",
        "inform",
        [
            "Done, the new price starts from your next bill.",
            "That's applied; your next invoice will be {amount}.",
            "All set, you'll see the discount from {month}.",
        ],
    ),
    # -- deliveries -------------------------------------------------------------------------------
    "c_where_order": (
        "customer",
        "order_status",
        "negative",
        "question",
        [
            "Where is my order? It was supposed to arrive on {day}.",
            "Why hasn't my parcel arrived yet? It's been {n} days.",
            "Where's my {product}? The tracking hasn't moved since {day}.",
            "How much longer do I have to wait for my delivery?",
            "Is my order ever going to turn up?",
            "why does the tracking still say 'preparing' after a week??",
        ],
    ),
    "c_track": (
        "customer",
        "order_status",
        "neutral",
        "question",
        [
            "When will my {product} be delivered?",
            "Has my order shipped yet?",
            "What's the status of the order I placed on {day}?",
            "Is my parcel out for delivery today?",
            "Which courier is bringing my order?",
            "Do you know roughly when the {product} will arrive?",
        ],
    ),
    "a_ask_order": (
        "agent",
        "order_status",
        "neutral",
        "directive",
        [
            "Could you give me the order number, please?",
            "Please send me the order number from your confirmation email.",
            "Could you read me the tracking number?",
            "Please share the order reference and I'll take a look.",
        ],
    ),
    "c_order_id": (
        "customer",
        "other",
        "neutral",
        "inform",
        [
            "It's {order}.",
            "{order}",
            "Here you go: {order}.",
            "It should be {order}... yes, that's it.",
            "Sure: {order}.",
        ],
    ),
    "a_order_bad": (
        "agent",
        "order_status",
        "neutral",
        "inform",
        [
            "The parcel is held at the local depot because the address was incomplete.",
            "The courier missed a scan, so the tracking stopped updating on {day}.",
            "Your {product} is delayed at our warehouse because of high demand.",
            "The delivery was attempted on {day} but nobody was in to sign for it.",
            "The item went out of stock after you ordered and is due back in next week.",
        ],
    ),
    "a_fix_delivery": (
        "agent",
        "order_status",
        "neutral",
        "commissive",
        [
            "I've corrected the address and booked redelivery for tomorrow.",
            "I'll chase the courier and call you back this afternoon.",
            "I'll upgrade it to express delivery at no charge once it's packed.",
            "I've rebooked the delivery for Saturday morning.",
            "I'll send a replacement from another warehouse today.",
        ],
    ),
    "a_order_info": (
        "agent",
        "order_status",
        "neutral",
        "inform",
        [
            "It was dispatched yesterday and is due on {day}.",
            "The courier has it now; you'll get a text with a one-hour window in the morning.",
            "Your order left our warehouse this morning and is on schedule for {day}.",
            "It's with the courier and should reach you within two working days.",
        ],
    ),
    "a_order_good": (
        "agent",
        "order_status",
        "positive",
        "inform",
        [
            "Good news, it's out for delivery and should be with you before 6pm.",
            "Great news, it arrived at your local depot and comes tomorrow morning.",
            "Happily it's already on the van, so you'll have it today.",
        ],
    ),
    "c_order_followup": (
        "customer",
        "order_status",
        "neutral",
        "question",
        [
            "Will I need to sign for it?",
            "Can I change the delivery day?",
            "Will I get a text before it arrives?",
            "Is it coming in one box or two?",
            "Could the driver leave it in the porch if I'm out?",
        ],
    ),
    "a_order_answer": (
        "agent",
        "order_status",
        "neutral",
        "inform",
        [
            "Yes, it needs a signature on delivery.",
            "You can move it to another day with the link in the tracking email.",
            "You'll get a text the evening before with a time slot.",
            "It's coming in two boxes; the second one follows a day later.",
            "The driver will see a note asking them to leave it in the porch.",
        ],
    ),
    # -- cancellations ----------------------------------------------------------------------------
    "c_cancel_angry": (
        "customer",
        "cancel",
        "negative",
        "directive",
        [
            "I want to cancel my contract, I've had enough.",
            "Cancel my account please, this service has been useless.",
            "I'd like to close my account today, I'm done with the constant outages.",
            "Just end my subscription. I'm sick of paying for something that doesn't work.",
        ],
    ),
    "c_cancel": (
        "customer",
        "cancel",
        "neutral",
        "directive",
        [
            "I'd like to cancel my subscription, please.",
            "Please cancel my {plan} plan at the end of the month.",
            "I'm moving abroad so I need you to end my contract.",
            "I need to close my account before the next billing date.",
            "Please stop my membership from renewing.",
        ],
    ),
    "c_cancel_q": (
        "customer",
        "cancel",
        "neutral",
        "question",
        [
            "How do I cancel my membership?",
            "Is there a fee if I cancel early?",
            "What's the notice period for ending my contract?",
            "Can I cancel online or do I have to call?",
        ],
    ),
    "a_cancel_why": (
        "agent",
        "cancel",
        "neutral",
        "question",
        [
            "I can help with that. May I ask why you'd like to leave?",
            "Sorry to see you go. What's the main reason for cancelling?",
            "Before I close it, is there anything that would make you stay?",
            "Is the cancellation because of the price or something else?",
        ],
    ),
    "c_cancel_reason": (
        "customer",
        "complaint",
        "negative",
        "inform",
        [
            "It's far too expensive for what I actually get.",
            "The service has been unreliable for months.",
            "The internet keeps dropping every evening and nobody has fixed it.",
            "I've had two engineer visits and nothing changed.",
        ],
    ),
    "c_cancel_reason_calm": (
        "customer",
        "cancel",
        "neutral",
        "inform",
        [
            "I found a cheaper deal elsewhere.",
            "I'm moving to a flat that already has a provider.",
            "I just don't use it enough anymore.",
            "My company pays for a different tool now, so I don't need mine.",
            "Mostly the price, it went up again in {month}.",
        ],
    ),
    "a_retention": (
        "agent",
        "cancel",
        "neutral",
        "commissive",
        [
            "I could offer you three months at half price if you'd like to stay.",
            "If you stay, I can move you to the {plan} plan for {amount} a month.",
            "I can waive this month's fee if you give us another chance.",
            "I can freeze your price for a year if you'd rather keep the account.",
        ],
    ),
    "c_reject_offer": (
        "customer",
        "cancel",
        "neutral",
        "commissive",
        [
            "No thanks, I'd still like to cancel.",
            "That's kind, but my mind's made up.",
            "No, I've decided to leave.",
            "I'll pass, just cancel it.",
        ],
    ),
    "c_accept_offer": (
        "customer",
        "other",
        "positive",
        "commissive",
        [
            "Oh, that would make a difference. I'll stay then.",
            "Alright, at that price I'll keep it.",
            "Okay, that's a fair offer, I'll stay.",
            "Go on then, I'll give it another try.",
        ],
    ),
    "a_cancel_done": (
        "agent",
        "cancel",
        "neutral",
        "commissive",
        [
            "I'll process the cancellation without an early exit fee.",
            "I'll cancel it today and send you the final bill.",
            "I'll close the account now and email you a confirmation.",
            "I'll set it to end on {date} so you don't pay for another month.",
        ],
    ),
    "c_cancel_when": (
        "customer",
        "cancel",
        "neutral",
        "question",
        [
            "When does the service actually end?",
            "Will I still have access until the end of the month?",
            "Do I need to send the router back?",
            "Will there be a final bill after I leave?",
        ],
    ),
    "a_cancel_info": (
        "agent",
        "cancel",
        "neutral",
        "inform",
        [
            "At the end of your billing period, on {date}.",
            "You keep full access until {date}, then it stops.",
            "We'll post you a prepaid bag for the router.",
            "Your final bill only covers the days up to {date}.",
        ],
    ),
    # -- accounts ---------------------------------------------------------------------------------
    "c_account_problem": (
        "customer",
        "account",
        "negative",
        "inform",
        [
            "hey i cant log in, it says my password is wrong",
            "I've been locked out of my account after too many attempts.",
            "The password reset email never arrives.",
            "Someone changed the email on my account and it wasn't me.",
            "My two-factor codes stopped working after I changed phones.",
            "It keeps saying my username doesn't exist.",
        ],
    ),
    "a_account_verify": (
        "agent",
        "account",
        "neutral",
        "directive",
        [
            "Please confirm the email address on the account.",
            "Could you tell me your date of birth for security?",
            "Please send me the username you signed up with.",
            "Please confirm the email you use to sign in.",
        ],
    ),
    "c_account_detail": (
        "customer",
        "other",
        "neutral",
        "inform",
        [
            "It's {email}.",
            "The {daynum} of {month}, {year}.",
            "I think it was {email}, or maybe my work one.",
            "Sure, {email}.",
        ],
    ),
    "a_account_fix": (
        "agent",
        "account",
        "neutral",
        "commissive",
        [
            "I've sent a reset link to the email on your account.",
            "I'll unlock the account now; you can sign in again in a few minutes.",
            "I've resent the reset link, and it should arrive within a minute.",
            "I'll restore your original email and sign out every other device.",
            "I've removed the old phone, so you can set up two-factor again.",
            "I'll send your username to the email on the account.",
        ],
    ),
    "c_account_q": (
        "customer",
        "account",
        "neutral",
        "question",
        [
            "How do I change the email address on my account?",
            "Can I add my partner as a second user?",
            "Where do I update my phone number?",
            "Is it possible to merge two accounts?",
            "How do I turn on two-step verification?",
        ],
    ),
    "a_account_answer": (
        "agent",
        "account",
        "neutral",
        "commissive",
        [
            "I'll change it for you now; you'll get a link to confirm the new address.",
            "I've added the second user; they'll get an invitation by email.",
            "I'll update the phone number on your profile right away.",
            "I'll merge them into your main account and move your history across.",
            "I'll switch it on and text you a code to finish the set-up.",
        ],
    ),
    "a_offer_security": (
        "agent",
        "account",
        "positive",
        "question",
        [
            "Great! Would you like to turn on two-step verification while you're there?",
            "Glad that worked. Shall I send you our account security checklist too?",
            "Brilliant. Would you like a text alert whenever someone signs in?",
        ],
    ),
    "c_not_now": (
        "customer",
        "other",
        "neutral",
        "inform",
        [
            "maybe later",
            "Not right now.",
            "I'll leave it for now.",
            "No need at the moment.",
        ],
    ),
    # -- technical faults -------------------------------------------------------------------------
    "c_tech_problem": (
        "customer",
        "tech_support",
        "negative",
        "inform",
        [
            "The app crashes every time I open the settings page.",
            "My internet keeps dropping every evening.",
            "The router's lights are flashing orange and nothing connects.",
            "Since the last update the app won't load my messages.",
            "I can't get the {device} to connect to the wifi.",
            "Video calls keep freezing after a few minutes.",
            "the {device} just shows a black screen now",
        ],
    ),
    "a_tech_question": (
        "agent",
        "tech_support",
        "neutral",
        "question",
        [
            "Which version of the app are you using?",
            "Is it happening on every device or just your phone?",
            "Have you tried restarting the router since it started?",
            "What does the error message say exactly?",
            "Are any lights on the {device} flashing red?",
            "When did you first notice the problem?",
        ],
    ),
    "c_tech_answer": (
        "customer",
        "tech_support",
        "neutral",
        "inform",
        [
            "Version 4.2, I think.",
            "just the phone, the tablet is fine",
            "Yes, twice already this morning.",
            "It says 'connection timed out'.",
            "The power light is green but the other one is red.",
            "It started on {day}, after the update.",
        ],
    ),
    "a_tech_instruct": (
        "agent",
        "tech_support",
        "neutral",
        "directive",
        [
            "Please unplug the router, wait thirty seconds and plug it back in.",
            "Could you clear the app's cache and open it again?",
            "Try signing out and back in, then open settings.",
            "Please hold the reset button on the {device} for ten seconds.",
            "Go to Settings, then Updates, and install the latest version.",
            "Could you run a speed test and tell me the result?",
        ],
    ),
    "c_wait": (
        "customer",
        "other",
        "neutral",
        "directive",
        [
            "Hang on, let me try.",
            "Give me a second.",
            "One moment please.",
            "Hold on, it's restarting.",
        ],
    ),
    "c_worked": (
        "customer",
        "other",
        "positive",
        "inform",
        [
            "got it... ok that worked",
            "Yes, I'm in now!",
            "Brilliant, it's working again.",
            "Oh great, I can see everything now.",
            "That fixed it, it's loading fine.",
            "It works now.",
        ],
    ),
    "c_still_broken": (
        "customer",
        "other",
        "negative",
        "inform",
        [
            "No, it's still not working.",
            "Same error as before.",
            "Nothing has changed, it still fails.",
            "Still nothing, and I'm getting really annoyed now.",
        ],
    ),
    "a_tech_fix": (
        "agent",
        "tech_support",
        "neutral",
        "commissive",
        [
            "I'll book an engineer visit for {day} between 8 and 12.",
            "I'll reset the line from our side; it takes about five minutes.",
            "I'll send you a replacement router by next-day delivery.",
            "I'll raise this with our developers and email you when a fix is out.",
        ],
    ),
    "c_tech_q": (
        "customer",
        "tech_support",
        "neutral",
        "question",
        [
            "How do I connect the {device} to my wifi?",
            "Is there an outage in my area at the moment?",
            "Which version of the app should I be on?",
            "Does the {device} work with a 5 GHz network?",
            "Why does the app ask for my location?",
        ],
    ),
    "a_tech_info": (
        "agent",
        "tech_support",
        "neutral",
        "inform",
        [
            "It joins through the app; the pairing option is under Devices.",
            "There's a known fault in your area; it should be fixed by this evening.",
            "The latest version is 5.1, and older ones stop syncing next month.",
            "It works on both 2.4 and 5 GHz networks.",
            "The app only uses your location to find the nearest store.",
        ],
    ),
    # -- complaints -------------------------------------------------------------------------------
    "c_complaint": (
        "customer",
        "complaint",
        "negative",
        "inform",
        [
            "This is the third time I'm calling about the same broken heater.",
            "Your engineer didn't turn up again and nobody called.",
            "The person I spoke to yesterday was really rude to me.",
            "I've been on hold for forty minutes before getting through.",
            "I'm really unhappy with how my case has been handled.",
            "Every time I call I get a different answer.",
            "I was promised a callback twice and never got one.",
        ],
    ),
    "c_threat": (
        "customer",
        "complaint",
        "negative",
        "inform",
        [
            "Honestly I'm about to give up on your company.",
            "If this isn't fixed this week I'm going to the ombudsman.",
            "I'll be leaving a review about this, believe me.",
            "I'm seriously thinking about taking my business elsewhere.",
        ],
    ),
    "c_annoyed": (
        "customer",
        "complaint",
        "negative",
        "inform",
        [
            "That's ridiculous, I typed the full address when I ordered.",
            "This is the second time this has happened.",
            "I took the day off work to wait for it.",
            "That's really not good enough.",
            "Honestly, I'm fed up with this.",
            "I've wasted hours on this already.",
            "Unbelievable. Nobody told me any of this.",
            "So I've been waiting a week for nothing.",
        ],
    ),
    "c_demand": (
        "customer",
        "complaint",
        "negative",
        "directive",
        [
            "Fine. Please make sure it actually comes this time.",
            "Just sort it, and don't make me chase it again.",
            "I want a supervisor to call me back today.",
            "Please sort it out properly this time.",
            "Put that in writing, please, because I don't trust it will happen.",
        ],
    ),
    "a_apologise": (
        "agent",
        "complaint",
        "neutral",
        "inform",
        [
            "I'm really sorry, that shouldn't have happened.",
            "I apologise. I can see the two earlier cases here.",
            "I'm sorry you've had to chase this so many times.",
            "That's not the experience we want you to have, and I'm sorry.",
            "I understand the frustration, and I apologise for the wait.",
        ],
    ),
    "a_escalate": (
        "agent",
        "complaint",
        "neutral",
        "commissive",
        [
            "I'm escalating this to a supervisor now.",
            "I'll log a formal complaint and a manager will call you within 48 hours.",
            "I'll make sure the team leader reviews yesterday's call.",
            "I'll raise it as a priority case and follow it up myself on {day}.",
        ],
    ),
    "a_compensate": (
        "agent",
        "complaint",
        "positive",
        "commissive",
        [
            "As an apology, I've added a credit of {amount} to your account.",
            "I'll arrange a replacement unit and waive the call-out charge.",
            "I'm sending you a {amount} voucher to say sorry for the trouble.",
        ],
    ),
    "c_skeptical": (
        "customer",
        "other",
        "neutral",
        "question",
        [
            "Really? You'll actually do that?",
            "And how do I know that will actually happen?",
            "Will someone really call this time?",
            "Is that a promise?",
        ],
    ),
    "a_reassure": (
        "agent",
        "complaint",
        "neutral",
        "commissive",
        [
            "Yes, it's on your file and I'll check it's done myself.",
            "It's booked, and you'll get a confirmation email in a few minutes.",
            "I'll call you myself on {day} to make sure.",
            "You have my word; I'll keep the case open until it's resolved.",
        ],
    ),
    "c_softened": (
        "customer",
        "other",
        "positive",
        "inform",
        [
            "Okay, that's better.",
            "Right, that's more like it.",
            "Alright, that helps a lot.",
            "That's fair, I appreciate it.",
        ],
    ),
    "c_accept": (
        "customer",
        "other",
        "neutral",
        "commissive",
        [
            "Okay, that works for me.",
            "Alright, let's do that.",
            "Sure, go ahead.",
            "Fine, I'll wait until then.",
            "OK, I can live with that.",
        ],
    ),
    # -- sales: plans -----------------------------------------------------------------------------
    "c_plan_q": (
        "customer",
        "purchase",
        "neutral",
        "question",
        [
            "What's the difference between the Plus and the Pro plan?",
            "How much is the {plan} plan per month?",
            "Do you offer a discount for annual billing?",
            "How many seats come with the Team plan?",
            "Is there a student discount?",
        ],
    ),
    "a_plan_info": (
        "agent",
        "purchase",
        "neutral",
        "inform",
        [
            "Pro adds priority support, ten more seats and the analytics dashboard.",
            "The {plan} plan is {amount} a month, or ten months' price if you pay yearly.",
            "Annual billing saves you two months on any plan.",
            "The Team plan includes five seats, and extra ones are {amount2} each.",
            "There's 15% off for students with a valid university email.",
        ],
    ),
    "c_want_plan": (
        "customer",
        "purchase",
        "neutral",
        "directive",
        [
            "I'd like to upgrade to the {plan} plan.",
            "Sign me up for the annual plan, please.",
            "Please move us to the Team plan.",
        ],
    ),
    "c_buy_plan": (
        "customer",
        "purchase",
        "positive",
        "commissive",
        [
            "Great, let's go with the {plan} plan.",
            "Okay, I'll go for the annual option.",
            "Alright, I'll take the {plan} plan.",
            "Let's do it, I'll upgrade today.",
        ],
    ),
    "a_plan_placed": (
        "agent",
        "purchase",
        "positive",
        "inform",
        [
            "Your {plan} plan is active from today.",
            "I've upgraded your workspace and the difference is prorated on your next invoice.",
            "That's all set up; you'll be charged {amount} today.",
        ],
    ),
    # -- sales: products --------------------------------------------------------------------------
    "c_product_q": (
        "customer",
        "purchase",
        "neutral",
        "question",
        [
            "Do you have the {product} in black?",
            "Is the {product} in stock at the moment?",
            "Does the {product} come with a warranty?",
            "Could I get the {product} before {day} if I order today?",
        ],
    ),
    "a_product_info": (
        "agent",
        "purchase",
        "neutral",
        "inform",
        [
            "We have it in black and silver; black ships today.",
            "It's in stock, with plenty left in the warehouse.",
            "The {product} comes with a two-year warranty as standard.",
            "If you order before 2pm, it arrives on {day}.",
        ],
    ),
    "c_want_product": (
        "customer",
        "purchase",
        "neutral",
        "directive",
        [
            "I want to order another {product}.",
            "I'd like to buy the {product} as a gift.",
            "Please add a {product} to my last order.",
        ],
    ),
    "c_buy_product": (
        "customer",
        "purchase",
        "positive",
        "commissive",
        [
            "Yes, I'll take it.",
            "Perfect, I'll order it now.",
            "Lovely, I'll have the black one.",
            "Great, I'll get the {product} then.",
        ],
    ),
    "a_sales_good": (
        "agent",
        "purchase",
        "positive",
        "inform",
        [
            "Great choice, it's our most popular model.",
            "Lovely, that one gets excellent reviews.",
            "Good call, it's the one I use at home.",
        ],
    ),
    "a_upsell": (
        "agent",
        "purchase",
        "neutral",
        "question",
        [
            "Would you like to add the extended warranty for {amount2}?",
            "Do you want it gift-wrapped?",
            "Would you like next-day delivery for an extra {amount2}?",
        ],
    ),
    "c_decline_extra": (
        "customer",
        "purchase",
        "neutral",
        "commissive",
        [
            "I'll skip the warranty.",
            "No gift wrap needed.",
            "Standard delivery is fine.",
        ],
    ),
    "c_accept_extra": (
        "customer",
        "purchase",
        "positive",
        "commissive",
        [
            "Yes, I'll take the warranty too.",
            "Oh yes, it's a present, so I'll have it wrapped.",
            "Yes, I'll pay for next-day.",
        ],
    ),
    "a_product_placed": (
        "agent",
        "purchase",
        "positive",
        "inform",
        [
            "Done, your order is placed and a confirmation email is on its way.",
            "All done, the {product} ships tomorrow.",
            "That's ordered; you'll be charged {amount} today.",
        ],
    ),
    "c_pleased": (
        "customer",
        "other",
        "positive",
        "inform",
        [
            "Perfect, exactly what I needed.",
            "Brilliant, I'm really pleased with that.",
            "That's great news.",
            "Excellent, I've been waiting for this.",
        ],
    ),
    # -- closings ---------------------------------------------------------------------------------
    "c_thanks": (
        "customer",
        "thanks",
        "positive",
        "inform",
        [
            "Great, thank you so much for sorting that out.",
            "Thanks, that's really helpful.",
            "Brilliant, thanks for your help.",
            "Thank you, I appreciate it.",
            "Cheers, that's great.",
            "Thanks a lot, you've been very patient.",
            "Perfect, thank you!",
            "Lovely, thanks for fixing it so quickly.",
            "ok thanks",
            "thank you!!",
        ],
    ),
    "c_thanks_flat": (
        "customer",
        "thanks",
        "neutral",
        "inform",
        [
            "Okay, thanks I suppose.",
            "Fine. Thanks.",
            "Thanks, I guess that will have to do.",
        ],
    ),
    "a_welcome": (
        "agent",
        "thanks",
        "positive",
        "inform",
        [
            "You're welcome, happy to help.",
            "My pleasure.",
            "No problem at all, glad it's sorted.",
            "You're very welcome.",
            "Glad I could help!",
        ],
    ),
    "a_anything_else": (
        "agent",
        "other",
        "neutral",
        "question",
        [
            "Is there anything else I can help with today?",
            "Can I help with anything else?",
            "Anything else I can do for you?",
            "Is there something else you need?",
            "Was there anything else?",
        ],
    ),
    "c_bye": (
        "customer",
        "goodbye",
        "neutral",
        "inform",
        [
            "That's everything, bye.",
            "No, that's it. Bye.",
            "No, goodbye.",
            "That's all for now, bye.",
            "nope, bye",
        ],
    ),
    "c_bye_warm": (
        "customer",
        "goodbye",
        "positive",
        "inform",
        [
            "No, that's all. Have a good day!",
            "All good, take care and have a great weekend!",
            "That's all, have a lovely evening!",
            "Nothing else, you have a good one!",
        ],
    ),
    "c_bye_cold": (
        "customer",
        "goodbye",
        "negative",
        "inform",
        [
            "Whatever. Bye.",
            "We'll see. Goodbye.",
            "I'm not holding my breath. Bye.",
        ],
    ),
    "a_bye": (
        "agent",
        "goodbye",
        "positive",
        "inform",
        [
            "Have a great day, goodbye!",
            "Enjoy the rest of your day. Bye!",
            "Take care, bye for now.",
            "Have a lovely evening.",
            "All the best, goodbye.",
        ],
    ),
}

# kind -> [(flow, how many conversations)]. A step is "pool", "a|b" (one of), "?step" (half the
# time), "a+b" (both, in order: "?a+b" is both or neither) or "y@x" (y answering x, see POOLS).
FLOWS: dict[str, list[tuple[list[str], int]]] = {
    "billing": [
        (
            [
                "?a_greet",
                "c_bill_problem|c_bill_problem_q",
                "a_ask_card",
                "c_card",
                "?a_hold",
                "a_bill_explain",
                "c_refund_when|c_annoyed",
                "a_refund",
                "c_thanks|c_thanks_flat",
                "?a_anything_else+c_bye",
            ],
            5,
        ),
        (
            [
                "a_greet",
                "c_bill_q",
                "?a_identify+c_name@a_identify",
                "a_bill_answer@c_bill_q",
                "c_bill_followup",
                "a_bill_followup@c_bill_followup",
                "c_thanks",
                "a_welcome|a_bye",
            ],
            3,
        ),
    ],
    "delivery": [
        (
            [
                "?c_greet",
                "c_where_order",
                "a_ask_order",
                "c_order_id",
                "a_order_bad",
                "c_annoyed",
                "a_fix_delivery@a_order_bad",
                "c_demand|c_accept",
                "?a_anything_else+c_bye",
            ],
            4,
        ),
        (
            [
                "?a_greet",
                "c_track",
                "a_ask_order",
                "c_order_id",
                "a_order_info|a_order_good",
                "c_order_followup",
                "a_order_answer@c_order_followup",
                "c_thanks",
                "?a_bye",
            ],
            4,
        ),
    ],
    "cancel": [
        (
            [
                "?a_greet",
                "c_cancel_angry|c_cancel|c_cancel_q",
                "a_cancel_why",
                "c_cancel_reason|c_cancel_reason_calm",
                "?a_retention+c_reject_offer",
                "a_cancel_done",
                "c_cancel_when",
                "a_cancel_info@c_cancel_when",
                "c_thanks|c_thanks_flat|c_bye",
            ],
            4,
        ),
        (
            [
                "c_cancel|c_cancel_q",
                "a_cancel_why",
                "c_cancel_reason_calm",
                "a_retention",
                "c_accept_offer",
                "a_price_applied",
                "c_thanks",
                "a_bye",
            ],
            3,
        ),
    ],
    "account": [
        (
            [
                "?c_greet",
                "c_account_problem",
                "a_account_verify",
                "c_account_detail@a_account_verify",
                "a_account_fix@c_account_problem",
                "c_worked",
                "?a_offer_security+c_not_now",
                "a_anything_else",
                "c_bye|c_bye_warm",
            ],
            4,
        ),
        (
            [
                "a_greet",
                "c_account_q",
                "a_identify",
                "c_name@a_identify",
                "a_account_answer@c_account_q",
                "c_thanks",
                "a_welcome",
            ],
            3,
        ),
    ],
    "tech": [
        (
            [
                "?a_greet",
                "c_tech_problem",
                "a_tech_question",
                "c_tech_answer@a_tech_question",
                "a_tech_instruct",
                "c_wait",
                "c_worked",
                "a_welcome",
                "c_bye|c_bye_warm",
            ],
            3,
        ),
        (
            [
                "c_tech_problem",
                "a_tech_question",
                "c_tech_answer@a_tech_question",
                "a_tech_instruct",
                "c_still_broken",
                "a_tech_fix",
                "c_accept|c_demand",
                "?a_anything_else+c_bye",
            ],
            3,
        ),
        (
            [
                "a_greet",
                "c_tech_q",
                "a_tech_info@c_tech_q",
                "c_tech_q",
                "a_tech_info@c_tech_q",
                "c_thanks",
                "a_bye",
            ],
            2,
        ),
    ],
    "complaint": [
        (
            [
                "c_complaint",
                "a_apologise",
                "c_threat",
                "a_escalate|a_compensate",
                "c_skeptical",
                "a_reassure",
                "c_softened",
                "c_thanks|c_thanks_flat",
            ],
            3,
        ),
        (
            [
                "?a_greet",
                "c_complaint",
                "a_apologise",
                "c_annoyed",
                "a_escalate",
                "c_demand",
                "a_reassure",
                "c_bye_cold",
            ],
            3,
        ),
    ],
    "sales": [
        (
            [
                "?a_greet",
                "c_plan_q",
                "a_plan_info@c_plan_q",
                "c_plan_q",
                "a_plan_info@c_plan_q",
                "c_want_plan|c_buy_plan",
                "a_plan_placed",
                "c_pleased|c_thanks",
                "?a_bye",
            ],
            4,
        ),
        (
            [
                "c_greet",
                "a_greet",
                "c_product_q|c_want_product",
                "a_product_info@c_product_q",
                "c_buy_product",
                "?a_sales_good",
                "a_upsell",
                "c_decline_extra@a_upsell|c_accept_extra@a_upsell",
                "a_product_placed",
                "c_thanks",
            ],
            4,
        ),
    ],
}

SLOTS: dict[str, list[str]] = {
    "agent": ["Sam", "Priya", "Tom", "Aisha", "Marco", "Lena", "Kofi"],
    "name": [
        "Jane Whitaker",
        "Omar Haddad",
        "Chloe Martin",
        "Ravi Patel",
        "Grace O'Neill",
        "Luis Romero",
        "Hannah Kim",
        "Peter Novak",
    ],
    "street": ["14 Mill Lane", "2 Orchard Close", "Flat 7, 31 Harbour Road", "88 Station Street"],
    "postcode": ["LS6 2AB", "BS1 4QT", "M14 5RN", "EH3 9DX", "CF10 1AA", "NE1 7RU"],
    "order": ["88-20391", "NW-48213", "30-11872", "A7-55920", "61-00457", "QX-73016", "12-98034"],
    "card": ["4417", "0932", "7781", "2056", "6640", "1198"],
    "amount": ["12.99", "29.00", "49.50", "8.75", "115.20", "64.00", "19.99"],
    "amount2": ["9.99", "24.00", "5.00", "39.00"],
    "plan": ["Plus", "Pro", "Family", "Basic", "Team"],
    "product": [
        "standing desk",
        "wireless headphones",
        "coffee grinder",
        "office chair",
        "air fryer",
        "desk lamp",
        "blender",
        "rain jacket",
    ],
    "device": ["router", "smart thermostat", "doorbell camera", "printer", "TV box"],
    "day": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"],
    "date": ["the 3rd", "the 14th", "the 21st", "the 28th", "the 9th"],
    "daynum": ["1st", "5th", "12th", "15th", "28th"],
    "month": ["March", "June", "September", "November", "January"],
    "year": ["1984", "1991", "1977", "2002"],
    "n": ["five", "six", "ten", "twelve"],
    "email": [
        "j.whitaker@example.com",
        "omar.h@example.net",
        "chloe.martin@example.org",
        "ravi_p@example.com",
        "grace.oneill@example.co.uk",
    ],
}


# Slots that name one thing per conversation (the customer's order, card, product, ...); the others are
# drawn afresh at each use.
PER_CONVERSATION = (
    "agent",
    "name",
    "street",
    "postcode",
    "order",
    "card",
    "plan",
    "product",
    "device",
    "email",
    "day",
)


class Deck:
    """Draw indices like a shuffled deck: nothing repeats before everything was drawn once."""

    def __init__(self, size: int, rng: random.Random) -> None:
        self.size, self.rng = size, rng
        self.left: list[int] = []

    def draw(self) -> int:
        if not self.left:
            self.left = self.rng.sample(range(self.size), self.size)
        return self.left.pop()


def fill(text: str, decks: dict[str, Deck], fixed: dict[str, str]) -> str:
    for slot, deck in decks.items():
        while "{" + slot + "}" in text:
            if slot in PER_CONVERSATION:
                value = fixed.setdefault(slot, SLOTS[slot][deck.draw()])
            else:
                value = SLOTS[slot][deck.draw()]
            text = text.replace("{" + slot + "}", value, 1)
    return text


def conversation(
    flow: list[str], rng: random.Random, decks: dict[str, Deck], slot_decks: dict[str, Deck]
) -> list[tuple[str, str]]:
    """(pool, text) per turn of one conversation following ``flow``."""
    turns: list[tuple[str, str]] = []
    drawn: dict[str, int] = {}  # pool -> index of its last phrasing in this conversation
    fixed: dict[str, str] = {}
    for step in flow:
        if step.startswith("?"):
            if rng.random() < 0.5:
                continue
            step = step[1:]
        for part in step.split("+"):
            pool, _, answers = rng.choice(part.split("|")).partition("@")
            phrasings = POOLS[pool][4]
            index = drawn[answers] % len(phrasings) if answers in drawn else decks[pool].draw()
            drawn[pool] = index
            turns.append((pool, fill(phrasings[index], slot_decks, fixed)))
    return turns


def main(out: Path = OUT) -> None:
    rng = random.Random(SEED)
    slot_decks = {name: Deck(len(values), rng) for name, values in SLOTS.items()}
    decks = {name: Deck(len(p[4]), rng) for name, p in POOLS.items()}
    start = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    jobs = [(kind, flow) for kind, flows in FLOWS.items() for flow, n in flows for _ in range(n)]
    rng.shuffle(jobs)  # kinds interleave in time, as a contact centre's traffic does
    utterances, labels = [], []
    for number, (kind, flow) in enumerate(jobs, start=1):
        conversation_id = f"demo-{kind}-{number:04d}"
        at = start + timedelta(seconds=50 * number + rng.randint(0, 30))
        for turn, (pool, text) in enumerate(conversation(flow, rng, decks, slot_decks)):
            speaker, intent, sentiment, act, _ = POOLS[pool]
            uid = f"{conversation_id}-t{turn:02d}"
            utterances.append(
                {
                    "conversation_id": conversation_id,
                    "utterance_id": uid,
                    "turn": turn,
                    "speaker": speaker,
                    "text": text,
                    "timestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "language": "en",
                }
            )
            tasks = (("intent", intent), ("sentiment", sentiment), ("dialogue_act", act))
            labels += [{"id": uid, "task": task, "label": label} for task, label in tasks]
            at += timedelta(seconds=rng.randint(6, 30))
    for name, rows in (("conversations.jsonl", utterances), ("labels.jsonl", labels)):
        with (out / name).open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    print(f"{len(jobs)} conversations, {len(utterances)} utterances -> {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
