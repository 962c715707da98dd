"""The partner program: referral links, attribution, commissions and payouts."""
