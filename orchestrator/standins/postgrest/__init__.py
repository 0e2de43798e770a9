"""The parts of Supabase's API the stand-in serves beside the RPC endpoint: PostgREST's table endpoints,
the app's Edge Functions and Storage (``orchestrator.standins.postgrest`` is the server that routes to them).
"""
